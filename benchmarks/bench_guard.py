"""Benchmark the per-step cost of the non-finite stop (callbacks.StopOnNonFinite).

    python benchmarks/bench_guard.py [--steps 40] [--repeats 5] [--size 64] [--width 0.25]

Trains one small network on random figures (traced, as model.py trains) and times one-epoch
fits without and with the callback, alternating, after a warm-up fit of each: the check reads
the loss Keras logs after every step. Prints the median milliseconds per step of each and
ends with one JSON line. Runs on the backend KERAS_BACKEND names (TensorFlow by default).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from figure_pose.core import backend  # noqa: E402

keras = backend.start_keras()

from figure_pose.core.confidence_maps import ARCH_CODECS  # noqa: E402
from figure_pose.training.callbacks import StopOnNonFinite  # noqa: E402
from figure_pose.training.network import build_model  # noqa: E402
from synthetic_coco import random_figures_file  # noqa: E402
from figure_pose.training.train_config import TrainConfig  # noqa: E402
from figure_pose.training.training import compile_model, make_datasets, make_trainer  # noqa: E402


def ms_per_step(trainer, data, callbacks):
    """Milliseconds per step of one epoch of `trainer.fit` on `data` with `callbacks`."""
    started = time.perf_counter()
    trainer.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
    return (time.perf_counter() - started) / len(data) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs of each, alternating")
    parser.add_argument("--size", type=int, default=64, help="input side in pixels")
    parser.add_argument("--width", type=float, default=0.25, help="channel multiplier")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        data = str(random_figures_file(os.path.join(folder, "coco.npy"), n=64, size=args.size, seed=0))
        cfg = TrainConfig(data=data, out=folder, batch_size=4, size=args.size, width=args.width,
                          steps_per_epoch=args.steps, epochs=1, workers=1)
        train, val = make_datasets(cfg)
        trainer = make_trainer(build_model("simple", train.n_joints, train.size, args.width), val,
                               ARCH_CODECS["simple"])
        compile_model(trainer, 1e-4, args.steps * (2 * args.repeats + 2), "constant", False)
        times = {"without": [], "with": []}
        for repeat in range(args.repeats + 1):          # the first round warms up (tracing)
            for name, callbacks in (("without", []), ("with", [StopOnNonFinite(1, len(train))])):
                ms = ms_per_step(trainer, train, callbacks)
                if repeat:
                    times[name].append(ms)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name} the stop: median {medians[name]:.2f} ms per step "
              f"({', '.join(f'{v:.2f}' for v in values)})", flush=True)
    print(json.dumps({"backend": keras.backend.backend(), "steps": args.steps,
                      "ms_per_step": {k: round(v, 2) for k, v in medians.items()}}))


if __name__ == "__main__":
    main()
