"""Benchmark coco_process.py: figures/s, peak RSS and bytes per figure at 1x and 10x input.

    python benchmarks/bench_preprocess.py [--coco-root ../shared/data/coco-sample] [--workers 2]

The 10x input repeats every image and annotation of the 1x input ten times (new ids,
same files), so the work grows 10x while the content stays comparable. Peak RSS is the
largest sum of resident memory over coco_process.py and its worker processes, sampled
every 20 ms (shared pages are counted once per process, so this over-estimates).
The original pipeline: 0.26 s per figure on 2 cores, ~11 MB RAM and 5.6 MB disk per figure.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGINAL_BYTES_PER_FIGURE = 5_632_156  # 320x320x3 uint8 + 13x320x320 float32 + 13x3 keypoints


def repeat_dataset(coco_root, split, times, out_root):
    """A COCO folder whose annotation JSON repeats the input `times` times (images linked)."""
    with open(os.path.join(coco_root, "annotations", f"person_keypoints_{split}.json")) as f:
        data = json.load(f)
    id_step = 10 ** len(str(max(a["id"] for a in data["annotations"]) + max(i["id"] for i in data["images"])))
    images, annotations = [], []
    for k in range(times):
        images += [dict(img, id=img["id"] + k * id_step) for img in data["images"]]
        annotations += [dict(a, id=a["id"] + k * id_step, image_id=a["image_id"] + k * id_step)
                        for a in data["annotations"]]
    os.makedirs(os.path.join(out_root, "annotations"))
    os.makedirs(os.path.join(out_root, "images"))
    os.symlink(os.path.abspath(os.path.join(coco_root, "images", split)), os.path.join(out_root, "images", split))
    with open(os.path.join(out_root, "annotations", f"person_keypoints_{split}.json"), "w") as f:
        json.dump(dict(data, images=images, annotations=annotations), f)


def tree_rss_bytes(pid):
    """Resident memory of a process and all its descendants, from /proc."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def run_and_measure(coco_root, split, out, workers):
    """Run coco_process.py; returns (seconds, peak tree RSS in bytes, figures)."""
    cmd = [sys.executable, os.path.join(REPO, "coco_process.py"), "--coco-root", coco_root, "--split", split,
           "--out", out, "--workers", str(workers), "--examples", "0", "--quiet"]
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(proc.pid))
        time.sleep(0.02)
    seconds = time.time() - start
    stdout, stderr = proc.communicate()
    if proc.returncode:
        sys.exit(f"coco_process.py failed: {stderr.strip()}")
    with open(out + ".json") as f:
        figures = json.load(f)["figures"]
    return seconds, peak, figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--coco-root", default=os.path.join(REPO, "..", "shared", "data", "coco-sample"),
                        help="COCO folder to benchmark on (default: ../shared/data/coco-sample)")
    parser.add_argument("--split", default="train2017", help="split to read (default: train2017)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes (default: all cores)")
    parser.add_argument("--times", type=int, default=10, help="growth factor of the large input (default: 10)")
    args = parser.parse_args()
    if not os.path.isdir(args.coco_root):
        sys.exit(f"bench_preprocess.py: error: {args.coco_root} not found")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for times in (1, args.times):
            root = os.path.join(tmp, f"x{times}")
            repeat_dataset(args.coco_root, args.split, times, root)
            out = os.path.join(tmp, f"x{times}.npy")
            seconds, peak, figures = run_and_measure(root, args.split, out, args.workers)
            rows.append((times, figures, seconds, peak, os.path.getsize(out) / figures))
    print(f"{'input':>6} {'figures':>8} {'seconds':>8} {'fig/s':>7} {'s/fig':>7} {'peak RSS MB':>12} {'bytes/figure':>13}")
    for times, figures, seconds, peak, per_figure in rows:
        print(f"{times:>5}x {figures:>8} {seconds:>8.2f} {figures / seconds:>7.1f} {seconds / figures:>7.4f} "
              f"{peak / 2**20:>12.0f} {per_figure:>13,.0f}")
    growth = rows[1][3] / rows[0][3]
    print(f"peak RSS growth for {args.times}x input: {growth:.2f}x (target: within 1.20x)")
    print(f"disk per figure vs the original's {ORIGINAL_BYTES_PER_FIGURE:,} bytes: "
          f"{ORIGINAL_BYTES_PER_FIGURE / rows[1][4]:.1f}x smaller (target: >= 20x)")
    print(f"speed vs the original's 0.26 s/figure: {0.26 / (rows[1][2] / rows[1][1]):.0f}x faster")


if __name__ == "__main__":
    main()
