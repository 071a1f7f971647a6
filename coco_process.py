"""Cut every COCO person out into a centred figure with keypoints and confidence maps.

    python coco_process.py --coco-root DIR --split train2017 --out coco.npy

Reads DIR/annotations/person_keypoints_<split>.json and DIR/images/<split>/, and writes
one `coco.npy`: a NumPy structured array (dtype `figures.figure_dtype`) that
`np.load(path, mmap_mode="r")` opens without reading it, plus `coco.npy.json` (joint
names, settings, counts). Records are streamed to `coco.npy.partial` and renamed at the
end, so a killed run never leaves a complete-looking `coco.npy`; `--resume` continues it.
"""
import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from multiprocessing import get_context

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from confidence_maps import STRIDE, quantise_maps, render_confidence_maps
from figures import (apply_affine, canvas_image, coco_indices, crop_to_record, draw_skeleton,
                     figure_dtype, joint_names, open_figures, render_figure)

HEADER_BYTES = 4096  # reserved .npy header, rewritten in place with the final count


class InputError(Exception):
    """Bad input from the user: reported as one line, no traceback."""


# ----------------------------------------------------------------------------- annotations

ANNOTATION_REQUIRED = ("id", "image_id", "bbox", "keypoints")


def compact_coco_object(obj):
    """json object_hook: of a COCO image or keypoint annotation, keep only what this script reads.

    Called on every JSON object as it is parsed, so the dropped fields are garbage at once.
    Keypoints and polygons become float64 arrays (8 bytes a number, against ~32 as Python
    floats in a list); the values are those `np.asarray(..., np.float64)` gives from the lists.
    A segmentation that is not a polygon list (crowd RLE) becomes None: skip_reason only asks
    whether it is a list, and nothing else reads it. Any other object, and an annotation that
    lacks a required field (load_coco_annotations reports it), stays as parsed.
    """
    if "image_id" in obj:
        if not all(k in obj for k in ANNOTATION_REQUIRED):
            return obj
        ann = {"id": obj["id"], "image_id": obj["image_id"], "bbox": obj["bbox"],
               "keypoints": np.asarray(obj["keypoints"], dtype=np.float64)}
        if "iscrowd" in obj:
            ann["iscrowd"] = obj["iscrowd"]
        if "segmentation" in obj:
            segmentation = obj["segmentation"]
            ann["segmentation"] = ([np.asarray(p, dtype=np.float64) if isinstance(p, list) else p
                                    for p in segmentation] if isinstance(segmentation, list) else None)
        return ann
    if "file_name" in obj and "id" in obj:
        return {"id": obj["id"], "file_name": obj["file_name"]}
    return obj


def load_coco_annotations(path, object_hook=None):
    """The COCO keypoint JSON as a dict, validated enough to give clear errors.

    object_hook: passed to json.load (skipping_object_hook(settings) keeps only what a
    coco_process run reads; None keeps everything, as evaluate.py needs).
    """
    if not os.path.isfile(path):
        raise InputError(f"annotation file not found: {path} (run download_coco.sh, or pass --coco-root)")
    try:
        with open(path) as f:
            data = json.load(f, object_hook=object_hook)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not JSON ({err})") from None
    missing = [k for k in ("images", "annotations") if not isinstance(data, dict) or k not in data]
    if missing:
        raise InputError(f"{path} is not a COCO annotation file (no {' or '.join(missing)})")
    for ann in data["annotations"][:1]:
        # one skipping_object_hook skipped had them all, and kept only its ids
        absent = [] if "skipped" in ann else [k for k in ANNOTATION_REQUIRED if k not in ann]
        if absent:
            raise InputError(f"{path} is not a COCO keypoint file (annotations lack {', '.join(absent)})")
    return data


def skip_reason(ann, settings):
    """Why an annotation cannot become a figure (a counter key), or None if it can.

    Checked from the JSON alone, so a run knows its work before reading any image.
    """
    if ann.get("iscrowd", 0):
        return "crowd"
    keypoints = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
    if len(keypoints) != 17:
        return "not_17_keypoints"
    labelled = int((keypoints[coco_indices(settings["joint_names"]), 2] > 0).sum())
    if labelled < settings["min_keypoints"]:
        return "too_few_keypoints"
    if settings["background"] == "white":
        segmentation = ann.get("segmentation")
        if not isinstance(segmentation, list) or not segmentation:
            return "no_polygon"
        if len(segmentation) > 1 and not settings["allow_multi_polygon"]:
            return "multi_polygon"
    _, _, w, h = ann["bbox"]
    if w * h <= settings["min_area"]:
        return "too_small"
    return None


def skipping_object_hook(settings):
    """json object_hook for a run with `settings`: compact_coco_object, and each annotation's
    skip_reason decided as it is parsed, under the key "skipped".

    A skipped annotation keeps only id, image_id and "skipped", so the persons a run skips
    (4 in 5 of the COCO slice's at the defaults) are never held whole all at once.
    """
    def hook(obj):
        obj = compact_coco_object(obj)
        if "image_id" in obj and all(k in obj for k in ANNOTATION_REQUIRED):
            reason = skip_reason(obj, settings)
            if reason:
                return {"id": obj["id"], "image_id": obj["image_id"], "skipped": reason}
            obj["skipped"] = None
        return obj
    return hook


def plan_work(data, settings):
    """Per-image tasks [(image_info, [annotations])] in image-id order, and skip counts.

    An annotation's "skipped" (skipping_object_hook) stands for its skip_reason; a missing
    image entry goes before it.
    """
    images = {img["id"]: img for img in data["images"]}
    counts = Counter()
    by_image = {}
    for ann in sorted(data["annotations"], key=lambda a: (a["image_id"], a["id"])):
        counts["annotations_seen"] += 1
        reason = ("no_image_entry" if ann["image_id"] not in images
                  else ann["skipped"] if "skipped" in ann else skip_reason(ann, settings))
        if reason:
            counts["skipped_" + reason] += 1
        else:
            by_image.setdefault(ann["image_id"], []).append(ann)
    tasks = [(images[i], by_image[i]) for i in sorted(by_image)]
    return tasks, counts


def first_tasks_for(tasks, limit):
    """The leading tasks that hold the first `limit` figures (one per annotation)."""
    total = 0
    for n, (_, anns) in enumerate(tasks):
        total += len(anns)
        if total >= limit:
            return tasks[:n + 1]
    return tasks


# ----------------------------------------------------------------------------- figures

def person_mask(ann, height, width):
    """H x W uint8 mask of a person's polygons (pycocotools, as COCO.annToMask does)."""
    rles = mask_utils.frPyObjects(ann["segmentation"], height, width)
    return mask_utils.decode(mask_utils.merge(rles))


def figure_record(image_rgb, ann, settings):
    """One structured record (figure_dtype) for one person annotation."""
    height, width = image_rgb.shape[:2]
    mask = person_mask(ann, height, width) if settings["background"] == "white" else None
    canvas, affine = render_figure(image_rgb, mask, ann["bbox"], settings["size"])
    coco_kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
    kept = coco_kp[coco_indices(settings["joint_names"])]
    labelled = kept[:, 2] > 0
    keypoints = np.zeros_like(kept)
    keypoints[labelled, :2] = apply_affine(affine, kept[labelled, :2])
    keypoints[:, 2] = kept[:, 2]
    map_size = settings["size"] // settings["map_stride"]
    maps = render_confidence_maps(keypoints, map_size, settings["map_stride"])

    record = np.zeros((), dtype=settings["dtype"])
    record["image_id"], record["annotation_id"] = ann["image_id"], ann["id"]
    record["canvas_size"] = settings["size"]
    record["bbox"], record["affine"], record["keypoints"] = ann["bbox"], affine, keypoints
    crop_to_record(canvas, record)
    record["confidence_maps"] = quantise_maps(maps)
    return record


def process_image(task):
    """Worker: all figures of one image -> (records array, image file name or None if unreadable)."""
    image_info, anns, settings = task
    path = os.path.join(settings["image_dir"], image_info["file_name"])
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        return np.zeros(0, settings["dtype"]), image_info["file_name"]
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return np.stack([figure_record(rgb, ann, settings) for ann in anns]), None


# ----------------------------------------------------------------------------- output

def npy_header(dtype, count):
    """A .npy v1.0 header for a 1-D structured array, padded to exactly HEADER_BYTES."""
    text = "{'descr': %r, 'fortran_order': False, 'shape': (%d,), }" % (
        np.lib.format.dtype_to_descr(dtype), count)
    pad = HEADER_BYTES - 10 - len(text) - 1
    if pad < 0:
        raise ValueError("record dtype too large for the reserved .npy header")
    return b"\x93NUMPY\x01\x00" + np.uint16(HEADER_BYTES - 10).tobytes() + (text + " " * pad + "\n").encode("latin1")


def atomic_write_json(path, obj):
    """Write JSON via a temp file and rename, so readers never see half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


class FigureWriter:
    """Streams records to `<out>.partial`; `finish()` renames it to `<out>`.

    The partial file is a valid .npy layout with a reserved header; `<out>.partial.json`
    records how many records and image tasks are safely on disk, so a killed run can
    `resume` from there (anything written after the last checkpoint is cut off).
    """

    def __init__(self, out, dtype, settings_key, resume):
        self.out, self.dtype, self.partial = out, dtype, out + ".partial"
        self.progress_path = self.partial + ".json"
        self.state = {"settings": settings_key, "records": 0, "tasks_done": 0, "counts": {},
                      "unreadable": []}
        if resume and os.path.exists(self.partial) and os.path.exists(self.progress_path):
            with open(self.progress_path) as f:
                saved = json.load(f)
            if saved.get("settings") == settings_key:
                self.state = saved
        self.file = open(self.partial, "r+b" if self.state["records"] else "wb")
        self.file.truncate(HEADER_BYTES + self.state["records"] * dtype.itemsize)
        self.file.seek(0)
        self.file.write(npy_header(dtype, 0))
        self.file.seek(0, os.SEEK_END)

    def append(self, records):
        self.file.write(records.tobytes())
        self.state["records"] += len(records)

    def checkpoint(self, tasks_done, counts, unreadable):
        self.file.flush()
        os.fsync(self.file.fileno())
        self.state.update(tasks_done=tasks_done, counts=dict(counts), unreadable=unreadable)
        atomic_write_json(self.progress_path, self.state)

    def finish(self):
        self.file.seek(0)
        self.file.write(npy_header(self.dtype, self.state["records"]))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.partial, self.out)
        if os.path.exists(self.progress_path):
            os.remove(self.progress_path)


# ----------------------------------------------------------------------------- examples

def write_examples(figures, names, out_dir, count):
    """Save `count` figures spread over the file as <image>_<n>.png (keypoints drawn) and <image>_<n>_c.png (map sum)."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for n in np.unique(np.linspace(0, len(figures) - 1, count).round().astype(int)):
        record = figures[n]
        canvas = canvas_image(record)
        stem = os.path.join(out_dir, f"{int(record['image_id'])}_{n}")
        drawn = draw_skeleton(canvas, record["keypoints"][:, :2], record["keypoints"][:, 2] > 0, names)
        cv2.imwrite(stem + ".png", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        total = np.clip(record["confidence_maps"].astype(np.float32).sum(-1), 0, 255).astype(np.uint8)
        total = cv2.resize(total, canvas.shape[:2][::-1], interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(stem + "_c.png", total)
        written += [stem + ".png", stem + "_c.png"]
    return written


# ----------------------------------------------------------------------------- driver

def check_writable(out):
    """Fail early, with one line, if `out` cannot be created."""
    directory = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(directory):
        raise InputError(f"cannot write {out}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise InputError(f"cannot write {out}: directory {directory} is not writable")
    if os.path.isdir(out):
        raise InputError(f"cannot write {out}: it is a directory")


def process(args):
    """Run the whole conversion; returns the summary dict (also written to the sidecar)."""
    started = time.time()
    names = joint_names(args.joints)
    ann_path = os.path.join(args.coco_root, "annotations", f"person_keypoints_{args.split}.json")
    image_dir = os.path.join(args.coco_root, "images", args.split)
    settings = {"joint_names": names, "min_keypoints": args.min_keypoints, "background": args.background,
                "allow_multi_polygon": args.allow_multi_polygon, "min_area": args.min_area,
                "size": args.size, "map_stride": args.map_stride, "image_dir": image_dir,
                "dtype": figure_dtype(len(names), args.size, args.map_stride)}
    data = load_coco_annotations(ann_path, object_hook=skipping_object_hook(settings))
    if not os.path.isdir(image_dir):
        raise InputError(f"image folder not found: {image_dir}")
    check_writable(args.out)
    tasks, counts = plan_work(data, settings)
    del data  # unused images and skipped annotations go now, not after the run
    if args.limit:
        tasks = first_tasks_for(tasks, args.limit)
    key = {k: v for k, v in settings.items() if k not in ("dtype", "image_dir")}
    key.update(joint_names=list(names), annotations=ann_path, limit=args.limit)
    writer = FigureWriter(args.out, settings["dtype"], key, args.resume)
    run_counts = Counter(writer.state["counts"])  # skips found while running (unreadable images)
    unreadable = list(writer.state["unreadable"])
    done = writer.state["tasks_done"]
    if done:
        print(f"resuming after {done} images ({writer.state['records']} figures on disk)")
    todo = [(info, anns, settings) for info, anns in tasks[done:]]
    last_checkpoint = time.time()
    # spawned workers hold only their own tasks, not a forked copy of the annotation JSON
    with get_context("spawn").Pool(args.workers) as pool, tqdm(total=len(tasks), initial=done, unit="img",
                                          desc="figures", disable=args.quiet) as bar:
        for records, bad_file in pool.imap(process_image, todo, chunksize=4):
            done += 1
            if bad_file:
                unreadable.append(bad_file)
                run_counts["skipped_image_unreadable"] += len(tasks[done - 1][1])
            if args.limit:
                records = records[:max(0, args.limit - writer.state["records"])]
            writer.append(records)
            bar.update(1)
            bar.set_postfix(figures=writer.state["records"])
            if time.time() - last_checkpoint >= args.checkpoint_seconds:
                writer.checkpoint(done, run_counts, unreadable)
                last_checkpoint = time.time()
        pool.close()  # all results are in: let workers exit (terminate can hang on one still starting)
        pool.join()
    counts += run_counts
    seconds = time.time() - started
    summary = {"joint_names": list(names), "settings": key, "figures": writer.state["records"],
               "counts": dict(sorted(counts.items())), "unreadable_images": unreadable,
               "seconds": round(seconds, 2), "record_bytes": settings["dtype"].itemsize}
    atomic_write_json(args.out + ".json", summary)
    writer.finish()
    return summary


def print_summary(summary, seconds):
    counts = summary["counts"]
    print(f"annotations seen : {counts.get('annotations_seen', 0)}")
    print(f"figures written  : {summary['figures']}")
    for key, value in counts.items():
        if key.startswith("skipped_"):
            print(f"skipped {key[8:]:<17}: {value}")
    for name in summary["unreadable_images"][:10]:
        print(f"  unreadable image: {name}")
    rate = summary["figures"] / max(seconds, 1e-9)
    print(f"seconds          : {seconds:.1f} ({rate:.1f} figures/s)")
    print(f"bytes per figure : {summary['record_bytes']}")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (no usage block), like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def int_in(low, high=None):
    """An argparse type: an integer in [low, high] (checked at parse time, so no run starts with a wrong value)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            within = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be an integer {within}, not {text!r}")
        return value
    return parse


def number_at_least(low):
    """An argparse type: a finite number >= low (NaN would silently disable the check it sets)."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= low):
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low:g}, not {text!r}")
        return value
    return parse


def split_name(text):
    """An argparse type: a COCO split name such as train2017; it becomes part of paths, so no paths."""
    if not text or not all(c.isalnum() or c in "_-" for c in text):
        raise argparse.ArgumentTypeError(f"must be a split name like train2017 (letters, digits, _ and -), "
                                         f"not {text!r}")
    return text


def main(argv=None):
    parser = OneLineParser(
        prog="coco_process.py",
        description="Cut COCO persons into centred 320x320 figures on white with keypoints and "
                    "Gaussian confidence maps, written to one memory-mappable .npy.")
    parser.add_argument("--coco-root", default=".", help="folder holding annotations/ and images/ (default: .)")
    parser.add_argument("--split", type=split_name, default="train2017",
                        help="COCO split, e.g. train2017 or val2017 (default: train2017)")
    parser.add_argument("--out", default="coco.npy", help="output .npy path; a .json sidecar is written beside it (default: coco.npy)")
    parser.add_argument("--joints", type=int, choices=sorted((13, 17)), default=13,
                        help="13 = the original's joints (no eyes/ears), 17 = all COCO keypoints (default: 13)")
    parser.add_argument("--min-keypoints", type=int_in(0, 17), default=8,
                        help="keep a person only if at least this many of the kept joints are labelled, "
                             "0 to --joints (default: 8)")
    parser.add_argument("--min-area", type=number_at_least(0), default=2500,
                        help="keep a person only if its bbox has more than this many pixels, >= 0 "
                             "(default: 2500, as the original)")
    parser.add_argument("--allow-multi-polygon", action="store_true",
                        help="also keep persons whose segmentation has several polygons (the original kept one-polygon persons only)")
    parser.add_argument("--background", choices=("white", "keep"), default="white",
                        help="white: mask the person from its segmentation on white (the original); "
                             "keep: crop the bbox without masking (default: white)")
    parser.add_argument("--size", type=int_in(32, 2048), default=320,
                        help="canvas side in pixels, 32 to 2048, a multiple of --map-stride (default: 320)")
    parser.add_argument("--map-stride", type=int_in(1, 64), default=STRIDE,
                        help=f"canvas pixels per confidence-map pixel, 1 to 64; maps are size/stride square "
                             f"(default: {STRIDE})")
    parser.add_argument("--workers", type=int_in(1, 256), default=os.cpu_count() or 1,
                        help="parallel processes, 1 to 256 (default: all cores)")
    parser.add_argument("--limit", type=int_in(0), default=0,
                        help="stop after this many figures, for trying it out; 0 = all (default: 0)")
    parser.add_argument("--resume", action="store_true", help="continue a killed run from its .partial file")
    parser.add_argument("--checkpoint-seconds", type=number_at_least(0), default=5.0,
                        help="how often finished work is made safe for --resume, >= 0 (default: 5)")
    parser.add_argument("--examples", type=int_in(0), default=4, help="example PNGs to write, >= 0 (default: 4)")
    parser.add_argument("--examples-dir", default="imgs", help="where example PNGs go (default: imgs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.size % args.map_stride:
        parser.error(f"--size {args.size} must be a multiple of --map-stride {args.map_stride}")
    if args.min_keypoints > args.joints:
        parser.error(f"--min-keypoints {args.min_keypoints} is more than the {args.joints} joints (--joints)")
    try:
        started = time.time()
        summary = process(args)
        print_summary(summary, time.time() - started)
        if summary["figures"] and args.examples:
            written = write_examples(open_figures(args.out), summary["joint_names"], args.examples_dir, args.examples)
            print(f"examples         : {', '.join(written)}")
    except (InputError, OSError) as err:
        sys.exit(f"coco_process.py: error: {err}")


if __name__ == "__main__":
    main()
