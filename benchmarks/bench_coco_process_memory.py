"""Benchmark coco_process.py's peak memory on a train2017-sized annotation JSON.

    python benchmarks/bench_coco_process_memory.py [--coco-root ../shared/data/coco-sample] [--json-load]

The full train2017 keypoint JSON (262,465 person annotations over 64,115 images with
persons, ~240 MB) is not needed: this repeats the real slice's images and annotations with
fresh ids until it has as many, in a temporary folder whose images/ is a symlink to the
slice's images (the repeats share file names, so no image is copied). coco_process.py then
runs on it with a small --limit: loading and planning are what is measured, not figures.
Peak RSS is the largest sum of resident memory over coco_process.py and its worker
processes, sampled every 20 ms (shared pages count once per process, so this over-estimates).
--json-load also reports the peak RSS of a bare `json.load` of the same file, the old loader.
Ends with one JSON line; sizes in MB (2**20 bytes).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_preprocess import tree_rss_bytes  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN2017_ANNOTATIONS = 262_465  # person annotations in person_keypoints_train2017.json
TRAIN2017_IMAGES = 64_115        # images with at least one person


def write_repeated_json(coco_root, split, out_root, annotations, images):
    """Write out_root/annotations/person_keypoints_<split>.json with `annotations` and `images`
    entries, repeating the slice with fresh ids; returns (annotations, images, bytes).

    Copy k of the slice shifts every id by k * step. Annotation j belongs to the full copy
    (j // per_copy) % full_copies, so every annotation has an image entry.
    """
    with open(os.path.join(coco_root, "annotations", f"person_keypoints_{split}.json")) as f:
        data = json.load(f)
    src_images, src_anns = data["images"], data["annotations"]
    step = 10 ** len(str(max(a["id"] for a in src_anns) + max(i["id"] for i in src_images)))
    full_copies = max(1, images // len(src_images))
    path = os.path.join(out_root, "annotations", f"person_keypoints_{split}.json")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        head = {k: v for k, v in data.items() if k not in ("images", "annotations")}
        f.write(json.dumps(head)[:-1] + ', "images": [')
        for i in range(images):
            img = src_images[i % len(src_images)]
            f.write((", " if i else "") + json.dumps(dict(img, id=img["id"] + (i // len(src_images)) * step)))
        f.write('], "annotations": [')
        for j in range(annotations):
            ann, k = src_anns[j % len(src_anns)], (j // len(src_anns)) % full_copies
            copy = j // len(src_anns)  # fresh annotation id even when the image copy repeats
            f.write((", " if j else "") + json.dumps(dict(ann, id=ann["id"] + copy * step,
                                                          image_id=ann["image_id"] + k * step)))
        f.write("]}")
    os.makedirs(os.path.join(out_root, "images"))
    os.symlink(os.path.abspath(os.path.join(coco_root, "images", split)), os.path.join(out_root, "images", split))
    return annotations, images, os.path.getsize(path)


def run_and_measure(cmd):
    """Run `cmd`; returns (seconds, peak tree RSS in bytes, largest single-process max RSS in bytes)."""
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, tree_rss_bytes(proc.pid))
        time.sleep(0.02)
    seconds = time.time() - start
    stderr = proc.stderr.read()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"bench_coco_process_memory.py: {cmd[1]} failed: {stderr.strip()}")
    return seconds, peak, usage.ru_maxrss * 1024  # Linux reports ru_maxrss in KiB


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--coco-root", default=os.path.join(REPO, "..", "shared", "data", "coco-sample"),
                        help="COCO slice to repeat (default: ../shared/data/coco-sample)")
    parser.add_argument("--split", default="train2017", help="split to read (default: train2017)")
    parser.add_argument("--annotations", type=int, default=TRAIN2017_ANNOTATIONS,
                        help=f"person annotations to write (default: {TRAIN2017_ANNOTATIONS}, train2017)")
    parser.add_argument("--images", type=int, default=TRAIN2017_IMAGES,
                        help=f"image entries to write (default: {TRAIN2017_IMAGES}, train2017's with persons)")
    parser.add_argument("--limit", type=int, default=200, help="figures coco_process.py writes (default: 200)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes (default: all cores)")
    parser.add_argument("--json-load", action="store_true", help="also measure a bare json.load of the file")
    args = parser.parse_args()
    if not os.path.isdir(args.coco_root):
        sys.exit(f"bench_coco_process_memory.py: error: {args.coco_root} not found")
    mb = 2 ** 20
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "coco")
        annotations, images, size = write_repeated_json(args.coco_root, args.split, root, args.annotations, args.images)
        out = os.path.join(tmp, "coco.npy")
        cmd = [sys.executable, os.path.join(REPO, "coco_process.py"), "--coco-root", root, "--split", args.split,
               "--out", out, "--limit", str(args.limit), "--workers", str(args.workers), "--examples", "0", "--quiet"]
        seconds, peak, largest = run_and_measure(cmd)
        with open(out + ".json") as f:
            figures = json.load(f)["figures"]
        result = {"annotations": annotations, "images": images, "json_mb": round(size / mb, 1),
                  "figures": figures, "workers": args.workers, "peak_rss_mb": round(peak / mb),
                  "largest_process_max_rss_mb": round(largest / mb), "seconds": round(seconds, 2)}
        if args.json_load:
            ann_path = os.path.join(root, "annotations", f"person_keypoints_{args.split}.json")
            load = [sys.executable, "-c", "import json, sys; json.load(open(sys.argv[1]))", ann_path]
            load_seconds, load_peak, load_largest = run_and_measure(load)
            result.update(json_load_peak_rss_mb=round(max(load_peak, load_largest) / mb),
                          json_load_seconds=round(load_seconds, 2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
