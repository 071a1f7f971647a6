"""The pretrained-encoder network against `simple`, in one run: parameters, GFLOPs per figure,
CPU training figures/s and TFLite latency at batch 1.

    python benchmarks/bench_backbone.py                       # 128 px, each network at model.py's default width
    python benchmarks/bench_backbone.py --sizes 128 192 256 --steps 20

Training: model.py's training step (training.FigureTrainer: device augmentation, target
maps, loss, Adam) on batches of --batch-size random figures, `--warmup` untimed steps (tracing)
then `--steps` timed ones, the batches read beforehand (the host input is bench_input.py's
subject). Latency: `evaluate.py --export tflite` of the untrained network, the median of
--runs calls of one canvas (inference.exported_predictor: preprocessing, the interpreter with
all cores, tanh -> [0, 1]). The weights do not change either number, so the encoder starts
from random weights and nothing is read from ../shared.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NETWORKS = {"simple": {}, "mobilenet_v2": {"backbone": "mobilenet_v2", "backbone_weights": None}}


def measure(name, size, cfg, args, data, tmp):
    """{parameters, gflops, train figures/s, tflite ms} of one network at one input size, built and
    compiled as model.py does from `cfg` (a TrainConfig: width, the encoder's rate and frozen steps)."""
    import keras
    from bench_inference import timed

    from figure_pose.evaluation import inference
    import figure_pose.training.network as N
    import figure_pose.training.training as T
    from figure_pose.core.confidence_maps import ARCH_CODECS
    from figure_pose.data.figure_dataset import Augment, FigureBatches
    keras.utils.set_random_seed(0)
    network = N.build_model("simple", 13, size, cfg.width, **NETWORKS[name])
    batches = FigureBatches(data, batch_size=args.batch_size, size=size, augment=Augment(), steps=10 ** 6)
    trainer = T.compile_model(T.make_trainer(network, batches, ARCH_CODECS["simple"]), lr=5e-4,
                              encoder_lr_scale=cfg.backbone_lr_scale, encoder_frozen_steps=cfg.backbone_frozen_steps)
    inputs = [batches[i] for i in range(args.warmup + args.steps)]
    for batch in inputs[:args.warmup]:
        trainer.train_on_batch(batch)
    start = time.perf_counter()
    for batch in inputs[args.warmup:]:
        trainer.train_on_batch(batch)
    figures_per_s = args.steps * args.batch_size / (time.perf_counter() - start)
    exported = inference.export_model(network, "tflite", os.path.join(tmp, f"{name}{size}"))
    predict = inference.exported_predictor(exported)
    canvas = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    return {"parameters": network.count_params(), "gflops": N.count_flops(network) / 1e9,
            "train_figures_per_s": figures_per_s,
            "tflite_ms": timed(lambda: predict(None, canvas), args.runs, 5)["median_ms"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[128], help="input sizes (multiples of 32)")
    p.add_argument("--width", type=float, default=None,
                   help="channel multiplier of simple, and of the backbone's decoder (default: model.py's for each)")
    p.add_argument("--batch-size", type=int, default=8, help="training batch")
    p.add_argument("--warmup", type=int, default=3, help="untimed training steps (tracing)")
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--runs", type=int, default=50, help="timed TFLite calls")
    args = p.parse_args()
    from figure_pose.core import backend
    backend.start_keras()
    from synthetic_coco import random_figures_file
    from figure_pose.training.train_config import TrainConfig
    with tempfile.TemporaryDirectory() as tmp:
        data = str(random_figures_file(os.path.join(tmp, "coco.npy"), n=64, size=max(args.sizes), seed=0))
        print(f"{'network':<14}{'size':>5}{'width':>6}{'params (M)':>12}{'GFLOPs':>8}{'train fig/s':>13}{'TFLite ms':>11}")
        for size in args.sizes:
            for name in NETWORKS:
                cfg = TrainConfig(backbone=NETWORKS[name].get("backbone"), width=args.width)
                r = measure(name, size, cfg, args, data, tmp)
                print(f"{name:<14}{size:>5}{cfg.width:>6g}{r['parameters'] / 1e6:>12.2f}{r['gflops']:>8.2f}"
                      f"{r['train_figures_per_s']:>13.1f}{r['tflite_ms']:>11.1f}", flush=True)
    print(f"(CPU: {os.cpu_count()} threads; training batch {args.batch_size}, {args.steps} timed steps; "
          f"TFLite batch 1, median of {args.runs})")


if __name__ == "__main__":
    main()
