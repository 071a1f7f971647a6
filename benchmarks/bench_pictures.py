"""Benchmark one epoch's training pictures: pictures.write_eval_pngs on random maps.

    python benchmarks/bench_pictures.py [--figures 4 8] [--size 64 128] [--repeats 5]

Every epoch model.py draws the original's four pictures of a fixed validation batch (EpochPictures):
the input, the target maps, one heat map per joint and figure, the peaks. For each --figures /
--size pair (input side in pixels; the maps are a quarter of it, 13 joints), the first call is
a warm-up and the mean of --repeats calls is reported, in milliseconds. Ends with one JSON line.
Run it on two commits (a `git worktree` of each) to compare them.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from figure_pose.core.pictures import write_eval_pngs  # noqa: E402


def time_epoch_pictures(figures: int, size: int, repeats: int, folder: str) -> float:
    """Mean milliseconds of write_eval_pngs for `figures` random (size, size) figures with
    (size / 4, size / 4, 13) maps, after one warm-up call."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (figures, size, size, 3), dtype=np.uint8)
    target, predicted = (rng.random((figures, size // 4, size // 4, 13), dtype=np.float32) for _ in range(2))
    write_eval_pngs(folder, 0, images, target, predicted)
    started = time.perf_counter()
    for epoch in range(repeats):
        write_eval_pngs(folder, epoch, images, target, predicted)
    return (time.perf_counter() - started) / repeats * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--figures", type=int, nargs="+", default=[4, 8],
                        help="figures in the picture batch, one run per value (model.py's tests: 4, the demo: 8)")
    parser.add_argument("--size", type=int, nargs="+", default=[64, 128],
                        help="input side in pixels, paired with --figures (the maps are a quarter of it)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per pair, after one warm-up call")
    args = parser.parse_args(argv)
    if len(args.figures) != len(args.size):
        parser.error("give as many --size values as --figures values")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for figures, size in zip(args.figures, args.size):
            ms = time_epoch_pictures(figures, size, args.repeats, folder)
            print(f"{figures} figures at {size} px: {ms:.0f} ms per epoch's pictures", flush=True)
            results.append({"figures": figures, "size": size, "ms": round(ms, 1)})
    print(json.dumps({"epoch_pictures": results}))


if __name__ == "__main__":
    main()
