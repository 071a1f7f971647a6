"""Training throughput, end to end: the host input pipeline and the training step, in one run.

    python benchmarks/bench_train.py                      # 320 x 320, ours vs --arch original, CPU
    KERAS_BACKEND=jax python benchmarks/bench_train.py --data D --simple-batches 64 256 \\
        --original-batches --input new old --mixed-precision --steps 50   # on a GPU

Each (arch, batch, input) runs in its own process (so peak RSS is its own): build and
compile, `--warmup` steps (tracing and compiling: their time is reported as warm-up s), then
`--steps` timed steps, each one batch taken from the loader (Keras' PyDataset enqueuer, as
model.fit uses it) and one `train_on_batch`. `--input new` is model.py's path (the host
reads uint8 crops, the device augments, renders maps and computes the loss:
training.FigureTrainer); `--input old` the previous one (the host warps, renders maps and
sends float32 images and targets). Prints
params, GFLOPs per figure, figures/s, the fraction of step time spent waiting for input,
and peak RSS. Without --data, random figures are written to a temporary coco.npy.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_step(arch, size, width, batch, data, input_path, workers):
    """(model, loader iterator, train step, validation step or None) for one configuration."""
    import keras

    import figure_pose.training.network as N
    import figure_pose.training.training as T
    from bench_input import OldHostBatches
    from figure_pose.core.confidence_maps import ARCH_CODECS
    from figure_pose.data.figure_dataset import Augment, FigureBatches
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    batches = FigureBatches(data, batch_size=batch, size=size, augment=Augment(), steps=10 ** 6,
                            workers=workers, max_queue_size=max(10, 2 * workers))
    network = N.build_model(arch, batches.n_joints, size, width)
    codec = ARCH_CODECS[arch]
    if input_path == "new":
        trainer = T.compile_model(T.make_trainer(network, batches, codec), lr=2e-4)
        loader = batches
        step, validate = trainer.train_on_batch, trainer.test_on_batch
    else:
        network.compile(optimizer=keras.optimizers.Adam(2e-4), loss=[OldJointMSE()] * 3,
                        loss_weights=[T.LOSS_WEIGHTS["main"]] + [T.LOSS_WEIGHTS["side"]] * 2)
        make = OldHostBatches(batches, stride=codec.stride)

        class Old(keras.utils.PyDataset):
            def __len__(self):
                return len(batches)

            def __getitem__(self, index):
                return make(index)
        loader = Old(workers=workers, max_queue_size=max(10, 2 * workers))
        validate = None

        def step(data):
            return network.train_on_batch(*data)
    adapter = PyDatasetAdapter(loader, shuffle=False)
    adapter.on_epoch_begin()
    return network, iter(adapter.get_numpy_iterator()), step, validate


def OldJointMSE():  # noqa: N802 - a loss factory, named like the class it builds
    """The old loss signature: y_true (B, M, M, 2J) = J target maps then J mask channels."""
    import keras

    import figure_pose.training.training as T
    fg = T.make_loss("fg_mse")

    class Old(keras.losses.Loss):
        def call(self, y_true, y_pred):
            j = y_pred.shape[-1]
            return fg.call((y_true[..., :j], y_true[..., j:][:, 0, 0, :]), y_pred)
    return Old(name="old_joint_mse")


def measure(arch, size, batch, steps, warmup, width, data, input_path, workers, mixed):
    """One configuration in this process: dict of params, GFLOPs, figures/s, input wait, peak RSS."""
    import keras

    from figure_pose.core import backend
    import figure_pose.training.network as N
    keras.mixed_precision.set_dtype_policy(backend.dtype_policy(mixed))
    setup = time.perf_counter()
    network, batches, step, validate = make_step(arch, size, width, batch, data, input_path, workers)
    setup = time.perf_counter() - setup  # building the network and (new input) the trainer
    first_step = time.perf_counter()
    for _ in range(warmup):
        step(next(batches))
    first_step = time.perf_counter() - first_step  # mostly tracing and compiling the step
    waited, start = 0.0, time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        data_batch = next(batches)
        waited += time.perf_counter() - t
        step(data_batch)  # returns host numbers: the step has finished on the device
    seconds = time.perf_counter() - start
    validation_per_s = None
    if validate is not None:  # validation: the same device path, forward and metrics only
        validate(data_batch)
        start = time.perf_counter()
        for _ in range(steps):
            validate(data_batch)
        validation_per_s = batch * steps / (time.perf_counter() - start)
    return dict(arch=arch, batch=batch, input=input_path, mixed_precision=mixed,
                backend=keras.backend.backend(), params_m=network.count_params() / 1e6,
                gflops=N.count_flops(network) / 1e9, figures_per_s=batch * steps / seconds,
                setup_seconds=setup, warmup_seconds=first_step,
                validation_figures_per_s=validation_per_s,
                input_wait=waited / seconds,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_child(args, data, arch, batch, input_path):
    """measure() in a fresh process; returns its dict (or None if it failed)."""
    cmd = [sys.executable, __file__, "--child", arch, str(batch), input_path, "--size", str(args.size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--width", str(args.width),
           "--data", data, "--workers", str(args.workers)] + (["--mixed-precision"] if args.mixed_precision else [])
    result = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        print(f"{arch} batch {batch} input {input_path} failed:\n{result.stderr[-1500:]}", file=sys.stderr)
        return None
    print(lines[-1], flush=True)
    return json.loads(lines[-1])


def report(rows, size):
    """Print the table and the per-figure speed-ups (simple vs original, new vs old input)."""
    print(f"\ntraining throughput at {size}x{size}, {rows[0]['backend'] if rows else '?'} backend, "
          f"{os.cpu_count()} CPU cores")
    print(f"{'arch':9} {'input':5} {'batch':>5} {'params M':>9} {'GFLOPs':>7} {'fig/s':>8} {'input wait':>10} "
          f"{'warm-up s':>9} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['arch']:9} {r['input']:5} {r['batch']:5d} {r['params_m']:9.2f} {r['gflops']:7.2f} "
              f"{r['figures_per_s']:8.1f} {r['input_wait']:10.1%} {r['warmup_seconds']:9.1f} "
              f"{r['peak_rss_mb']:12.0f}")
    best = {}
    for r in rows:
        key = (r["arch"], r["input"])
        if key not in best or r["figures_per_s"] > best[key]["figures_per_s"]:
            best[key] = r
    if ("simple", "new") in best and ("original", "new") in best:
        s, o = best[("simple", "new")], best[("original", "new")]
        print(f"simple vs original (best batch each): {s['figures_per_s'] / o['figures_per_s']:.1f}x faster per "
              f"figure; FLOPs ratio {o['gflops'] / s['gflops']:.1f}x")
    for r in rows:
        if r["validation_figures_per_s"]:
            share = (6000 / r["validation_figures_per_s"]) / (55000 / r["figures_per_s"])
            print(f"{r['arch']} batch {r['batch']}: validation {r['validation_figures_per_s']:.1f} figures/s; "
                  f"6,000 validation figures cost {share:.1%} of a 55,000-figure epoch (full COCO's ratio)")
    if ("simple", "new") in best and ("simple", "old") in best:
        n, o = best[("simple", "new")], best[("simple", "old")]
        print(f"new vs old input path (simple, best batch each): {n['figures_per_s'] / o['figures_per_s']:.1f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="a coco.npy (default: random figures in a temporary file)")
    p.add_argument("--size", type=int, default=320, help="input size of the networks")
    p.add_argument("--steps", type=int, default=3, help="timed train steps per configuration")
    p.add_argument("--warmup", type=int, default=1,
                   help="steps before the timed ones (tracing and compiling; timed apart)")
    p.add_argument("--width", type=float, default=1.0, help="--width of the networks")
    p.add_argument("--simple-batches", type=int, nargs="*", default=[8, 16, 32], help="batches for simple")
    p.add_argument("--original-batches", type=int, nargs="*", default=[8], help="batches for original")
    p.add_argument("--input", nargs="+", choices=("new", "old"), default=["new"], help="input paths to time")
    p.add_argument("--workers", type=int, default=2, help="loader threads (model.py's default)")
    p.add_argument("--mixed-precision", action="store_true", help="as model.py --mixed-precision")
    p.add_argument("--child", nargs=3, metavar=("ARCH", "BATCH", "INPUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        arch, batch, input_path = args.child
        print(json.dumps(measure(arch, args.size, int(batch), args.steps, args.warmup, args.width, args.data,
                                 input_path, args.workers, args.mixed_precision)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from synthetic_coco import random_figures_file
            data = random_figures_file(os.path.join(tmp, "coco.npy"), n=64, size=320)
        rows = [run_child(args, data, arch, b, i) for i in args.input
                for arch, batches in (("simple", args.simple_batches), ("original", args.original_batches))
                for b in batches]
    report([r for r in rows if r], args.size)


if __name__ == "__main__":
    main()
