"""Cut every COCO person out into a centred figure with keypoints and confidence maps.

    python coco_process.py --coco-root DIR --split train2017 --out coco.npy

Reads DIR/annotations/person_keypoints_<split>.json and DIR/images/<split>/, and writes
one `coco.npy`: a NumPy structured array (dtype `figures.figure_dtype`) that
`np.load(path, mmap_mode="r")` opens without reading it, plus `coco.npy.json` (joint
names, settings, counts). Records are streamed to `coco.npy.partial` and renamed at the
end, so a killed run never leaves a complete-looking `coco.npy`; `--resume` continues it.

Bad input. A user mistake (a flag out of range, a missing or foreign file) is one line on
stderr and exit status 1 (2 for flags). A broken item inside the dataset (an annotation
whose fields are not what COCO describes, a duplicate annotation id, an annotation without
an image entry, a bbox reaching outside its image, an image file that is missing,
truncated or decodes to another size than the JSON says) is skipped, counted in the
sidecar and named on stderr; `--strict` stops at the first one instead. Every annotation
and every decoded image is checked against the JSON before a figure is cut from it.

Keypoints far outside the figure. A labelled keypoint so far outside the canvas that its
confidence map is empty (no map pixel within ~3.5 sigma of it) would be stored labelled
with nothing to learn from and an error to score that the model cannot see. It is stored
as unlabelled (0, 0, 0) instead, does not count towards --min-keypoints, and is counted as
"keypoints_far_outside" (a note on stderr, not a skip). A keypoint just outside the
canvas keeps its label and the part of its map that is on the canvas (COCO has a few
occluded joints guessed beyond the person's bbox and its frame).

Sidecar consistency: the sidecar names the data file it describes (size and CRC-32); a
kill between writing it and the rename is visible and `--resume` finishes the run (see
figure_pose/data/figure_writer.py, which writes coco.npy).

This script is the per-image pipeline and its command line; the library modules it drives, in
figure_pose/: data/figure_plan.py (which persons become figures, from the JSON alone),
core/figures.py (crop geometry, record format), core/confidence_maps.py (the maps),
data/figure_writer.py (coco.npy and --resume).
"""
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from multiprocessing import get_context

import cv2
import numpy as np

from figure_pose.core.cli import InputError, OneLineParser, int_in, number, progress, split_name
from figure_pose.core.confidence_maps import STRIDE, labelled_with_map, quantise_maps, render_confidence_maps
from figure_pose.core.figures import (bbox_mask, canvas_image, crop_to_record, figure_dtype, joint_names, open_figures,
                                      render_figure)
from figure_pose.core.pictures import draw_skeleton, save_png
from figure_pose.data.coco_io import annotation_path, load_coco_annotations, person_mask, read_image
from figure_pose.data.figure_plan import canvas_keypoints, first_tasks_for, plan_work, skipping_object_hook
from figure_pose.data.figure_writer import FigureWriter, check_writable


# ----------------------------------------------------------------------------- figures

def figure_record(image_rgb, ann, settings):
    """One structured record (figure_dtype) for one person annotation, and how many of its
    labelled keypoints lay so far outside the canvas that their maps were empty (stored
    unlabelled); None if the person's mask and bbox share no pixel (the figure would be blank)."""
    height, width = image_rgb.shape[:2]
    mask = person_mask(ann, height, width) if settings["background"] == "white" else None
    keep = bbox_mask(ann["bbox"], height, width)
    if not (keep if mask is None else keep & mask).any():
        return None, 0
    canvas, affine = render_figure(image_rgb, mask, ann["bbox"], settings["size"])
    canvas_kp = canvas_keypoints(ann, settings["joint_names"], affine)
    kept = labelled_with_map(canvas_kp, settings["size"], settings["map_stride"])
    keypoints = np.where(kept[:, None], canvas_kp, 0.0)  # far outside the canvas: unlabelled
    map_size = settings["size"] // settings["map_stride"]
    maps = render_confidence_maps(keypoints, map_size, settings["map_stride"])

    record = np.zeros((), dtype=settings["dtype"])
    record["image_id"], record["annotation_id"] = ann["image_id"], ann["id"]
    record["canvas_size"] = settings["size"]
    record["bbox"], record["affine"], record["keypoints"] = ann["bbox"], affine, keypoints
    crop_to_record(canvas, record)
    record["confidence_maps"] = quantise_maps(maps)
    return record, int(((canvas_kp[:, 2] > 0) & ~kept).sum())


def process_image(task):
    """Worker: all figures of one image -> (records array, counts, broken items named).

    The decoded size must be the JSON's: a resized or rotated file would be cut at the wrong place.
    """
    image_info, anns, settings = task
    name = image_info["file_name"]
    rgb, why = read_image(os.path.join(settings["image_dir"], name))
    key = "skipped_image_unreadable"
    if rgb is not None and rgb.shape[:2] != (image_info["height"], image_info["width"]):
        key, why = "skipped_image_size_mismatch", (f"decodes to {rgb.shape[1]}x{rgb.shape[0]}, the JSON says "
                                                  f"{image_info['width']}x{image_info['height']}")
    if why:
        return np.zeros(0, settings["dtype"]), Counter({key: len(anns)}), [f"image {name}: {why}"]
    records, counts, problems = [], Counter(), []
    for ann in anns:
        record, outside = figure_record(rgb, ann, settings)
        if record is None:
            counts["skipped_empty_figure"] += 1
            problems.append(f"annotation {ann['id']}: its polygons and bbox share no pixel of image {name}")
            continue
        records.append(record)
        counts["keypoints_far_outside"] += outside
    records = np.stack(records) if records else np.zeros(0, settings["dtype"])
    return records, +counts, problems


def ignore_interrupt():
    """Pool initializer: Ctrl-C is the main process's to report (workers would print tracebacks)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
        total = np.clip(record["confidence_maps"].astype(np.float32).sum(-1), 0, 255).astype(np.uint8)
        total = cv2.resize(total, canvas.shape[:2][::-1], interpolation=cv2.INTER_LINEAR)
        for path, picture in ((stem + ".png", drawn), (stem + "_c.png", cv2.cvtColor(total, cv2.COLOR_GRAY2RGB))):
            try:
                save_png(path, picture)
            except OSError:
                raise InputError(f"cannot write the example {path} (--examples-dir)") from None
            written.append(path)
    return written


# ----------------------------------------------------------------------------- driver

def examples_dir_of(out):
    """The default --examples-dir: beside the output, named after it (runs/coco.npy -> runs/coco_examples)."""
    stem = out[:-len(".npy")] if out.endswith(".npy") else out
    return stem + "_examples"


def check_examples_dir(path):
    """Fail before any work if the example pictures cannot go to `path`."""
    existing = path
    while not os.path.exists(existing) and os.path.dirname(os.path.abspath(existing)) != os.path.abspath(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise InputError(f"cannot write examples to --examples-dir {path}: "
                         f"{existing} is {'not writable' if os.path.isdir(existing) else 'not a directory'}")


def name_counts(counts):
    return ", ".join(f"{k[8:]} {v}" for k, v in sorted(counts.items()) if k.startswith("skipped_"))


def run_settings(args):
    """What every step and worker reads of the flags (the figure dtype and image folder too)."""
    names = joint_names(args.joints)
    return {"joint_names": names, "min_keypoints": args.min_keypoints, "background": args.background,
            "allow_multi_polygon": args.allow_multi_polygon, "min_area": args.min_area,
            "size": args.size, "map_stride": args.map_stride,
            "image_dir": os.path.join(args.coco_root, "images", args.split),
            "dtype": figure_dtype(len(names), args.size, args.map_stride)}


def check_outputs(args, ann_path):
    """Fail before any work if --out or --examples-dir cannot be written, or --out is the input."""
    check_writable(args.out)
    if os.path.exists(args.out) and os.path.exists(ann_path) and os.path.samefile(args.out, ann_path):
        raise InputError(f"--out {args.out} is the annotation file it reads")
    if args.examples:
        check_examples_dir(args.examples_dir)


def planned_tasks(args, settings, ann_path):
    """(tasks, counts, problems) of the annotation file: InputError if there is nothing to cut or
    --strict meets a broken item. The parsed JSON (unused images, skipped persons) goes on return."""
    data = load_coco_annotations(ann_path, object_hook=skipping_object_hook(settings))
    if not os.path.isdir(settings["image_dir"]):
        raise InputError(f"image folder not found: {settings['image_dir']}")
    tasks, counts, problems = plan_work(data, settings)
    seen = counts["annotations_seen"]
    if problems and args.strict:
        raise InputError(f"{problems[0]} (stopped by --strict)")
    if not seen:
        raise InputError(f"no figures to write: {ann_path} has no annotations")
    if not tasks:
        raise InputError(f"no figures to write: all {seen} annotations of {ann_path} were skipped "
                         f"({name_counts(counts)})")
    return (first_tasks_for(tasks, args.limit) if args.limit else tasks), counts, problems


def resume_key(settings, ann_path, limit):
    """What a --resume must find unchanged: the settings, the annotation file (path, size,
    mtime) and --limit. Stored in the progress file and the sidecar."""
    stat = os.stat(ann_path)
    key = {k: v for k, v in settings.items() if k not in ("dtype", "image_dir")}
    key.update(joint_names=list(settings["joint_names"]), annotations=ann_path, limit=limit,
               annotations_stat=[stat.st_size, stat.st_mtime_ns])
    return key


@contextlib.contextmanager
def image_results(todo, workers):
    """process_image's results of `todo`, in order: in this process, or in `workers` spawned
    processes (which hold only their own tasks, not a forked copy of the annotation JSON)."""
    if workers == 1:
        yield map(process_image, todo)
        return
    with get_context("spawn").Pool(workers, initializer=ignore_interrupt) as pool:
        yield pool.imap(process_image, todo, chunksize=4)
        pool.close()  # all results are in: let workers exit (terminate can hang on one still starting)
        pool.join()


def run_tasks(tasks, settings, writer, args):
    """Cut every task not on disk yet into `writer`, checkpointing as it goes; returns (tasks
    done, counts, problems) found while running (the resumed run's included)."""
    counts, problems = Counter(writer.state["counts"]), list(writer.state["problems"])
    done = writer.state["tasks_done"]
    if done:
        print(f"resuming after {done} images ({writer.state['records']} figures on disk)")
    todo = [(info, anns, settings) for info, anns in tasks[done:]]
    with image_results(todo, args.workers) as results, \
            progress(len(tasks), "images", "img", args.quiet, initial=done) as bar:
        for records, task_counts, task_problems in results:
            if task_problems and args.strict:
                raise InputError(f"{task_problems[0]} (stopped by --strict)")
            done += 1
            counts.update(task_counts)
            problems += task_problems
            if args.limit:
                records = records[:max(0, args.limit - writer.state["records"])]
            writer.append(records)
            bar.update(1)
            bar.set_postfix(figures=writer.state["records"])
            writer.checkpoint_every(args.checkpoint_seconds, done, counts, problems)
    return done, counts, problems


def process(args):
    """Run the whole conversion; returns the summary dict (also written to the sidecar)."""
    started = time.time()
    settings = run_settings(args)
    ann_path = annotation_path(args.coco_root, args.split)
    check_outputs(args, ann_path)
    tasks, counts, problems = planned_tasks(args, settings, ann_path)
    key = resume_key(settings, ann_path, args.limit)
    writer = FigureWriter(args.out, settings["dtype"], key, args.resume)
    done, run_counts, run_problems = run_tasks(tasks, settings, writer, args)
    counts += run_counts
    if not writer.state["records"]:
        writer.discard()
        first = "".join(f"; first: {p}" for p in (problems + run_problems)[:1])
        raise InputError(f"no figures written: every image with persons to cut was skipped "
                         f"({name_counts(counts)}{first})")
    writer.checkpoint(done, run_counts, run_problems)  # a kill from here on resumes with nothing to redo
    summary = {"joint_names": list(settings["joint_names"]), "settings": key, "figures": writer.state["records"],
               "counts": dict(sorted(counts.items())), "problems": problems + run_problems,
               "seconds": round(time.time() - started, 2), "record_bytes": settings["dtype"].itemsize}
    writer.finish(summary)
    return summary


def print_summary(summary, seconds, sidecar_path, shown=20):
    """Counts on stdout; each broken item skipped named on stderr (the first `shown`, all in the sidecar)."""
    counts = summary["counts"]
    print(f"annotations seen : {counts.get('annotations_seen', 0)}")
    print(f"figures written  : {summary['figures']}")
    for key, value in counts.items():
        if key.startswith("skipped_"):
            print(f"skipped {key[8:]:<17}: {value}")
    problems = summary["problems"]
    if counts.get("keypoints_far_outside"):
        print(f"coco_process.py: note: labelled keypoints too far outside their figure's canvas to have a map, "
              f"stored as unlabelled: {counts['keypoints_far_outside']}", file=sys.stderr)
    for problem in problems[:shown]:
        print(f"coco_process.py: skipped {problem}", file=sys.stderr)
    if len(problems) > shown:
        print(f"coco_process.py: skipped {len(problems) - shown} more broken items, all named in {sidecar_path}",
              file=sys.stderr)
    rate = summary["figures"] / max(seconds, 1e-9)
    print(f"seconds          : {seconds:.1f} ({rate:.1f} figures/s)")
    print(f"bytes per figure : {summary['record_bytes']}")


def build_parser():
    """The command line (every number range-checked at parse time)."""
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
                        help="keep a person only if at least this many of the kept joints are labelled on the "
                             "canvas, 0 to --joints (default: 8)")
    parser.add_argument("--min-area", type=number(0), default=2500,
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
                        help="parallel processes, 1 to 256; 1 works in this process (default: all cores)")
    parser.add_argument("--limit", type=int_in(0), default=0,
                        help="stop after this many figures, for trying it out; 0 = all (default: 0)")
    parser.add_argument("--strict", action="store_true",
                        help="stop with an error at the first broken annotation or image, instead of "
                             "skipping, counting and naming it")
    parser.add_argument("--resume", action="store_true", help="continue a killed run from its .partial file")
    parser.add_argument("--checkpoint-seconds", type=number(0), default=5.0,
                        help="how often finished work is made safe for --resume, >= 0 (default: 5)")
    parser.add_argument("--examples", type=int_in(0), default=4, help="example PNGs to write, >= 0 (default: 4)")
    parser.add_argument("--examples-dir", default=None,
                        help="where example PNGs go (default: beside --out, named after it: coco.npy -> "
                             "coco_examples/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.examples_dir is None:
        args.examples_dir = examples_dir_of(args.out)
    if args.size % args.map_stride:
        parser.error(f"--size {args.size} must be a multiple of --map-stride {args.map_stride}")
    if args.min_keypoints > args.joints:
        parser.error(f"--min-keypoints {args.min_keypoints} is more than the {args.joints} joints (--joints)")
    try:
        started = time.time()
        summary = process(args)
        print_summary(summary, time.time() - started, args.out + ".json")
        if summary["figures"] and args.examples:
            written = write_examples(open_figures(args.out), summary["joint_names"], args.examples_dir, args.examples)
            print(f"examples         : {', '.join(written)}")
    except (InputError, OSError) as err:
        sys.exit(f"coco_process.py: error: {err}")
    except KeyboardInterrupt:
        sys.exit("coco_process.py: interrupted (--resume continues from the last checkpoint)")


if __name__ == "__main__":
    main()
