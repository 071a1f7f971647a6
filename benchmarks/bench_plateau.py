"""The background plateau, watched: does training leave all-background maps, and why not.

    python benchmarks/bench_plateau.py --data real.npy --size 256                 # simple, its default heads
    python benchmarks/bench_plateau.py --data real.npy --size 256 --head-norm off # the plain heads before
    python benchmarks/bench_plateau.py --data real.npy --size 128 --backbone-weights W.h5

Trains model.py's training step (training.FigureTrainer, default augmentation, Adam at a
constant --lr, batch 8) for --steps steps and prints, every --every steps: the training
loss and PCK@0.2 of that batch, and on a fixed batch of the data (no augmentation, inference
mode) the loss and the fraction of main-output pixels at tanh <= -0.9999: saturated
background, where the gradient through tanh vanishes. A run on the plateau shows that
fraction near 1 and a flat loss; a learning run keeps it low while the loss falls.
--head-norm off builds the decoder's heads without the BatchNorm-LeakyReLU before their 1x1
conv + tanh (and, for simple, starting at 0 rather than network.HEAD_START), to show the cause.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="coco.npy to train on")
    p.add_argument("--size", type=int, default=256, help="network input size")
    p.add_argument("--width", type=float, default=0.5, help="channel multiplier")
    p.add_argument("--backbone-weights", help="train --backbone mobilenet_v2 from these weights (default: simple)")
    p.add_argument("--lr", type=float, default=5e-4, help="constant Adam learning rate")
    p.add_argument("--steps", type=int, default=280, help="training steps")
    p.add_argument("--every", type=int, default=40, help="report every N steps")
    p.add_argument("--head-norm", choices=("on", "off"), default="on",
                   help="BatchNorm-LeakyReLU before the heads (off: plain heads, as simple had them before)")
    args = p.parse_args()
    from figure_pose.core import backend
    keras = backend.start_keras()
    import figure_pose.training.network as N
    import figure_pose.training.training as T
    from figure_pose.core.confidence_maps import ARCH_CODECS
    from figure_pose.data.figure_dataset import Augment, FigureBatches
    keras.utils.set_random_seed(0)
    backbone = dict(backbone="mobilenet_v2", backbone_weights=args.backbone_weights) if args.backbone_weights else {}
    head_norm = args.head_norm == "on"
    batches = FigureBatches(args.data, batch_size=8, augment=Augment(), size=args.size, seed=0)
    fixed = FigureBatches(args.data, batch_size=8, augment=Augment(), size=args.size, shuffle=False)[0]
    network = N.build_model("simple", batches.n_joints, args.size, args.width, head_norm=head_norm, **backbone)
    trainer = T.compile_model(T.make_trainer(network, batches, ARCH_CODECS["simple"]), lr=args.lr)
    print(f"{network.name} at {args.size} px (head norm {args.head_norm}), "
          f"lr {args.lr:g}: step, training loss and PCK@0.2, fixed batch loss, saturated fraction", flush=True)
    for step in range(args.steps + 1):
        logs = trainer.train_on_batch(batches[step % len(batches)], return_dict=True)
        if step % args.every == 0:
            out = trainer(fixed, training=False)
            saturated = float((np.asarray(out["outputs"][0]) <= -0.9999).mean())
            fixed_loss = float(trainer.compute_loss(y_pred=out))
            print(f"{step:5d} {logs['loss']:9.1f} {logs['pck@0.2']:6.3f} {fixed_loss:9.1f} {saturated:6.3f}", flush=True)


if __name__ == "__main__":
    main()
