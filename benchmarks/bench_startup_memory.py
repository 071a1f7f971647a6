"""model.py peak RSS (anonymous and file-backed) for a small and a large coco.npy.

    python benchmarks/bench_startup_memory.py                 # 500 and 20,000 figures at 320

Writes two coco.npy files of `--small` and `--large` figures (sparse files: only the small
per-figure fields are written, the crops and maps read as zeros, so the 5 GB file costs
~100 MB of disk), then runs model.py on each in its own process: the 80/20 split by image,
the mean-pose baseline, one short epoch and its validation. RssAnon and RssFile of the
process are sampled every 20 ms; the peaks and their ratio (large / small) are printed,
then one JSON line. Memory flat in the dataset size means a ratio near 1.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def sparse_figures_file(path, n, size=320, seed=0):
    """A coco.npy of n records whose small fields are set (4 figures per image, every joint
    labelled) and whose crops and maps are left as holes in a sparse file."""
    from figure_pose.core.figures import figure_dtype
    rng = np.random.default_rng(seed)
    records = np.lib.format.open_memmap(path, mode="w+", dtype=figure_dtype(13, size), shape=(n,))
    for start in range(0, n, 1000):
        part = slice(start, min(n, start + 1000))
        count = part.stop - part.start
        records["image_id"][part] = np.arange(part.start, part.stop) // 4
        records["annotation_id"][part] = np.arange(part.start, part.stop)
        records["canvas_size"][part] = size
        keypoints = rng.uniform(0.3 * size, 0.7 * size, (count, 13, 3)).astype(np.float32)
        keypoints[..., 2] = 2
        records["keypoints"][part] = keypoints
    records.flush()
    del records
    return path


def peak_memory(argv):
    """Run argv; (exit status, peak RssAnon MB, peak RssFile MB, seconds), sampled from /proc."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks = {"RssAnon": 0, "RssFile": 0}
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    key = line.split(":")[0]
                    if key in peaks:
                        peaks[key] = max(peaks[key], int(line.split()[1]) // 1024)
        except OSError:
            pass
        time.sleep(0.02)
    stderr = proc.stderr.read()
    if proc.returncode:
        print(stderr[-2000:], file=sys.stderr)
    return proc.returncode, peaks["RssAnon"], peaks["RssFile"], time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=500, help="figures in the small file")
    p.add_argument("--large", type=int, default=20000, help="figures in the large file")
    p.add_argument("--model-args", default="--epochs 1 --steps-per-epoch 4 --size 64 --width 0.25 --batch-size 32",
                   help="model.py flags besides --data and --out")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.small, args.large):
            data = sparse_figures_file(os.path.join(tmp, f"coco_{n}.npy"), n)
            argv = [sys.executable, "model.py", "--data", data, "--out", os.path.join(tmp, f"run_{n}"),
                    "--quiet", *args.model_args.split()]
            status, anon, file_backed, seconds = peak_memory(argv)
            rows.append(dict(figures=n, file_gb=os.path.getsize(data) / 1e9, status=status, rss_anon_mb=anon,
                             rss_file_mb=file_backed, rss_mb=anon + file_backed, seconds=seconds))
            print(f"{n:6d} figures ({rows[-1]['file_gb']:.2f} GB file): exit {status}, peak RssAnon {anon} MB, "
                  f"RssFile {file_backed} MB, {seconds:.0f} s", flush=True)
    small, large = rows
    print(json.dumps({"small": small, "large": large,
                      "rss_ratio": round(large["rss_mb"] / small["rss_mb"], 3),
                      "rss_anon_ratio": round(large["rss_anon_mb"] / small["rss_anon_mb"], 3),
                      "rss_file_ratio": round(large["rss_file_mb"] / max(1, small["rss_file_mb"]), 3)}))


if __name__ == "__main__":
    main()
