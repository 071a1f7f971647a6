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
figure_writer.py, which writes coco.npy).
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

from coco_io import (BAD, annotation_path, annotation_problem, compact_annotation, compact_coco_object, image_entry_problem,
                     is_id, load_coco_annotations, person_mask, read_image, short)
from cli import InputError, OneLineParser, int_in, number, progress, split_name
from confidence_maps import STRIDE, quantise_maps, render_confidence_maps
from figures import (apply_affine, bbox_mask, canvas_image, coco_indices, crop_to_record, draw_skeleton,
                     figure_dtype, figure_transform, joint_names, open_figures, render_figure)
from figure_writer import FigureWriter, check_writable
from pictures import save_png


def to_canvas(keypoints, affine):
    """COCO keypoints (J x 3) -> canvas keypoints: labelled ones mapped through the figure's
    affine, unlabelled ones (0, 0, 0)."""
    labelled = keypoints[:, 2] > 0
    canvas = np.zeros_like(keypoints)
    canvas[labelled, :2] = apply_affine(affine, keypoints[labelled, :2])
    canvas[:, 2] = keypoints[:, 2]
    return canvas


def labelled_with_map(canvas_keypoints, size, map_stride):
    """(J,) bool: the labelled canvas keypoints whose stored confidence map is not empty.

    One on the canvas always has its peak there; one outside it is rendered to see (rare).
    """
    labelled = canvas_keypoints[:, 2] > 0
    xy = canvas_keypoints[:, :2]
    outside = labelled & ~((xy >= -0.5) & (xy < size - 0.5)).all(axis=1)  # pixel i covers [i - 0.5, i + 0.5)
    if outside.any():
        maps = quantise_maps(render_confidence_maps(canvas_keypoints[outside], size // map_stride, map_stride))
        labelled[outside] = maps.max(axis=(0, 1)) > 0
    return labelled


def skip_reason(ann, settings):
    """Why a valid annotation does not become a figure (a counter key), or None if it does.

    Checked from the JSON alone, so a run knows its work before reading any image. A
    keypoint whose map would be empty counts as unlabelled (see the module docstring).
    """
    if ann.get("iscrowd", 0):
        return "crowd"
    keypoints = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)[coco_indices(settings["joint_names"])]
    canvas = to_canvas(keypoints, figure_transform(ann["bbox"], settings["size"]))
    if int(labelled_with_map(canvas, settings["size"], settings["map_stride"]).sum()) < settings["min_keypoints"]:
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
    verdict (BAD, a skip_reason, or None) decided as it is parsed, under the key "skipped".

    A skipped annotation keeps only id, image_id and "skipped" (and a broken one its
    "problem"), so the persons a run skips (4 in 5 of the COCO slice's at the defaults) are
    never held whole all at once.
    """
    def hook(obj):
        if "image_id" not in obj:
            return compact_coco_object(obj)
        problem = annotation_problem(obj)
        if problem:
            return {"id": obj.get("id"), "image_id": obj.get("image_id"), "skipped": BAD, "problem": problem}
        ann = compact_annotation(obj)
        reason = skip_reason(ann, settings)
        if reason:
            return {"id": ann["id"], "image_id": ann["image_id"], "skipped": reason}
        ann["skipped"] = None
        return ann
    return hook


def bbox_outside(bbox, img):
    """A problem phrase if bbox reaches outside its image (by more than a pixel), else None."""
    x, y, w, h = (float(v) for v in bbox)
    if x < -1 or y < -1 or x + w > img["width"] + 1 or y + h > img["height"] + 1:
        return f"bbox {short(list(bbox))} reaches outside the {img['width']}x{img['height']} image"
    return None


def plan_images(images):
    """The usable `images` entries by id, the ids of broken ones, and the broken entries named
    ("image 3: ...", or "images[4]: ..." without a usable id); a duplicate id is named once."""
    ids = Counter(img["id"] for img in images if isinstance(img, dict) and is_id(img.get("id")))
    usable, bad, problems = {}, set(), []
    for n, img in enumerate(images):
        problem = image_entry_problem(img)
        if problem is None and ids[img["id"]] > 1:
            problem = f"its id is used by {ids[img['id']]} image entries"
        if not problem:
            usable[img["id"]] = img
        elif not (isinstance(img, dict) and is_id(img.get("id"))):
            problems.append(f"images[{n}]: {problem}")
        elif img["id"] not in bad:
            problems.append(f"image {img['id']}: {problem}")
            bad.add(img["id"])
    return usable, bad, problems


def own_verdict(ann, settings):
    """(reason, problem) of an annotation by itself: BAD and why, a skip_reason and None, or
    None, None. A skipping_object_hook stub carries its verdict, decided while parsing."""
    if isinstance(ann, dict) and "skipped" in ann:
        return ann["skipped"], ann.get("problem")
    problem = annotation_problem(ann)
    return (BAD, problem) if problem else (skip_reason(ann, settings), None)


def image_verdict(ann, reason, ann_ids, images, bad_images):
    """(reason, problem) of an annotation that is not broken by itself (`reason` its own
    verdict), against the other annotations' ids and its image entry."""
    if ann_ids[ann["id"]] > 1:
        return "duplicate_id", f"its id is used by {ann_ids[ann['id']]} annotations"
    if ann["image_id"] in bad_images:
        return "bad_image_entry", None  # the entry is named
    if ann["image_id"] not in images:
        return "no_image_entry", f"image {ann['image_id']} has no entry in images"
    if reason is None:
        problem = bbox_outside(ann["bbox"], images[ann["image_id"]])
        return (BAD if problem else None), problem
    return reason, None


def plan_work(data, settings):
    """Per-image tasks [(image_info, [annotations])] in image-id order, skip counts, and the
    broken items named ("annotation 7: ..."), in the order found.

    Every annotation gets one reason: broken by itself (BAD), then a duplicate id, a missing
    or broken image entry, a bbox outside its image (BAD), then the filters (skip_reason).
    """
    counts = Counter()
    images, bad_images, problems = plan_images(data["images"])
    anns = data["annotations"]
    ann_ids = Counter(a["id"] for a in anns if isinstance(a, dict) and is_id(a.get("id")))
    valid, named_duplicates = [], set()
    for n, ann in enumerate(anns):
        counts["annotations_seen"] += 1
        reason, problem = own_verdict(ann, settings)
        if reason != BAD:
            reason, problem = image_verdict(ann, reason, ann_ids, images, bad_images)
        if reason == "duplicate_id":
            problem = None if ann["id"] in named_duplicates else problem  # named once
            named_duplicates.add(ann["id"])
        if problem:
            name = f"annotation {ann['id']}" if isinstance(ann, dict) and is_id(ann.get("id")) else f"annotations[{n}]"
            problems.append(f"{name}: {problem}")
        if reason:
            counts["skipped_" + reason] += 1
        else:
            valid.append(ann)
    return tasks_by_image(valid, images), counts, problems


def tasks_by_image(anns, images):
    """[(image_info, [annotations])] of the annotations to cut, by image id and annotation id."""
    by_image = {}
    for ann in sorted(anns, key=lambda a: (a["image_id"], a["id"])):
        by_image.setdefault(ann["image_id"], []).append(ann)
    return [(images[i], by_image[i]) for i in sorted(by_image)]


def first_tasks_for(tasks, limit):
    """The leading tasks that hold the first `limit` figures (one per annotation)."""
    total = 0
    for n, (_, anns) in enumerate(tasks):
        total += len(anns)
        if total >= limit:
            return tasks[:n + 1]
    return tasks


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
    coco_kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
    canvas_kp = to_canvas(coco_kp[coco_indices(settings["joint_names"])], affine)
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
