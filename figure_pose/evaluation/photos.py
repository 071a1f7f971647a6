"""Pose on new photos (evaluate.py --images): the figure boxes, the crops, the overlays and predictions.json.

    boxes = load_box_annotations("boxes.csv")            # or a COCO JSON, or a JSON list; None: whole images
    summary = run_inference(args, model, predict, boxes)

Each image's figures come from --bbox, from --annotations (a COCO-format file whose
segmentation, polygons or RLE, masks the person as in training; a CSV of file,x,y,w,h rows;
a JSON list of {file, x, y, w, h}), or else the whole image is the figure. Each figure is
cut like a training figure (figures.render_figure), predicted, decoded, and mapped back to
the photo; predictions.json holds the joints in original pixels and an overlay per image.
"""
import json
import os
import sys

import numpy as np

from figure_pose.core.atomic import write_json
from figure_pose.core.cli import InputError, os_errors_as_input, progress
from figure_pose.core.figures import bbox_mask, flip_permutation, joint_names, render_figure, to_original
from figure_pose.core.pictures import draw_crop, draw_skeleton, save_png
from figure_pose.data.coco_io import PERSON_CATEGORY_ID, person_mask, read_image
from figure_pose.evaluation.inference import decode, model_maps, variant_name

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pbm", ".pgm", ".ppm")
# what an unmasked crop costs, measured (docs/results.md, "Photos without masks"); printed with --images
UNMASKED_COST = ("on 57 real COCO persons the demo model's PCK@0.1 falls from 0.45 masked to 0.25 unmasked "
                 "(docs/results.md, Photos without masks): give masks (COCO segmentation in --annotations) where you can")


# ----------------------------------------------------------------------------- inputs

def list_images(paths):
    """Image files named by `paths` (files as given; folders: their image files, sorted, not recursive)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, n) for n in os.listdir(path)
                            if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, n)))
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise InputError(f"no such file or folder: {path}")
    if not files:
        raise InputError(f"no image files in {' '.join(paths)}")
    return files


def load_box_annotations(path):
    """{file name: [annotation, ...]} from --annotations: a COCO-format file (images + annotations with
    bbox, optional segmentation), a CSV of file,x,y,w,h rows, or a JSON list of {file, x, y, w, h}."""
    try:
        if path.lower().endswith(".csv"):
            with open(path, newline="") as f:
                return simple_boxes(path, list(csv_rows(f)))
        with open(path) as f:
            data = json.load(f)
    except OSError as err:
        raise InputError(f"cannot read --annotations {path} ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"--annotations {path} is not JSON ({err})") from None
    if isinstance(data, list):
        return simple_boxes(path, [[d.get(k) for k in ("file", "x", "y", "w", "h")] if isinstance(d, dict) else d
                                   for d in data])
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise InputError(f"--annotations {path} is neither COCO format (lists images and annotations) nor a "
                         "list of {file, x, y, w, h}")
    return coco_boxes(path, data)


def coco_boxes(path, data):
    """{file name: [annotation, ...]} of a COCO-format --annotations dict: the persons (not crowds),
    each checked up front (annotation_problem); one-line InputError naming the first bad entry."""
    names = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise InputError(f"--annotations {path}: images[{k}] needs an id and a file_name")
        names[im["id"]] = os.path.basename(im["file_name"])
    boxes = {}
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise InputError(f"--annotations {path}: annotations[{k}] is not an object")
        if ann.get("category_id", PERSON_CATEGORY_ID) != PERSON_CATEGORY_ID or ann.get("iscrowd", 0):
            continue
        problem = annotation_problem(ann)
        if problem:
            raise InputError(f"--annotations {path}: annotation {ann.get('id', f'[{k}]')} {problem}")
        if ann["image_id"] in names:
            boxes.setdefault(names[ann["image_id"]], []).append(ann)
    return boxes


def csv_rows(f):
    """The rows of a file,x,y,w,h CSV, without blank lines and without a header row."""
    import csv
    for k, row in enumerate(csv.reader(f)):
        if not row or not "".join(row).strip():
            continue
        if k == 0 and [c.strip().lower() for c in row] == ["file", "x", "y", "w", "h"]:
            continue
        yield row


def simple_boxes(path, rows):
    """{file name: [{"id", "bbox"}, ...]} of rows [file, x, y, w, h] (numbers or numeric text);
    one-line InputError naming the first bad row (counted from 1)."""
    boxes = {}
    for k, row in enumerate(rows, 1):
        try:
            if len(row) != 5 or not isinstance(row[0], str) or not row[0].strip():
                raise ValueError
            bbox = [float(v) for v in row[1:]]
            if not np.all(np.isfinite(bbox)) or bbox[2] <= 0 or bbox[3] <= 0:
                raise ValueError
        except (TypeError, ValueError):
            raise InputError(f"--annotations {path}: row {k} is not file,x,y,w,h (w, h > 0): {row!r}") from None
        name = os.path.basename(row[0].strip())
        boxes.setdefault(name, []).append({"id": sum(map(len, boxes.values())) + 1, "bbox": bbox})
    if not boxes:
        raise InputError(f"--annotations {path} has no boxes")
    return boxes


def annotation_problem(ann):
    """What makes a person annotation unusable as a crop (None if nothing): checked up front, so a
    malformed --annotations file is one line before the model loads, not a traceback mid-run."""
    def numbers(values, least=0):
        return isinstance(values, list) and len(values) >= least and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values)
    seg = ann.get("segmentation")
    if "image_id" not in ann:
        return "has no image_id"
    if not numbers(ann.get("bbox")) or len(ann["bbox"]) != 4:
        return "has no bbox of 4 numbers x, y, w, h"
    if not seg:
        return None
    if isinstance(seg, list) and all(numbers(p, 6) and len(p) % 2 == 0 for p in seg):
        return None
    if isinstance(seg, dict) and isinstance(seg.get("counts"), (str, list)) and numbers(seg.get("size")) \
            and len(seg["size"]) == 2:
        return None
    return "has a segmentation that is neither polygons (lists of x, y, ...) nor RLE {counts, size}"


# ----------------------------------------------------------------------------- crops

def check_crop(bbox, mask, height, width):
    """ValueError if the figure box shows nothing of the image: its canvas would be blank, and the
    model answers a blank canvas with confident keypoints."""
    if not bbox[2] > 0 or not bbox[3] > 0:
        raise ValueError("box has no area")
    inside = bbox_mask(bbox, height, width)
    if not inside.any():
        raise ValueError(f"box lies outside the {width}x{height} image")
    if mask is not None:
        if mask.shape != (height, width):
            raise ValueError(f"segmentation is {mask.shape[1]}x{mask.shape[0]}, the image {width}x{height}")
        if not (inside & mask.astype(np.uint8)).any():
            raise ValueError("segmentation has no pixel inside the box")


def crops_for(image, file_name, bbox, boxes):
    """The figures to find in one image: [(bbox, mask or None, source)], and the skipped ones
    [{"bbox", "crop", "reason"}] whose box cannot be cropped from this image."""
    height, width = image.shape[:2]
    if bbox is not None:
        wanted = [(bbox, None, "--bbox")]
    elif boxes is not None and boxes.get(file_name):
        wanted = [(ann["bbox"], ann, "annotation") for ann in boxes[file_name]]
    else:
        wanted = [([0.0, 0.0, float(width), float(height)], None, "whole image")]
    crops, skipped = [], []
    for bb, ann, source in wanted:
        try:
            mask = person_mask(ann, height, width) if ann is not None else None
            check_crop(bb, mask, height, width)
        except ValueError as err:
            name = f"annotation {ann.get('id', '')}".strip() if ann is not None else source
            skipped.append({"bbox": [float(v) for v in bb], "crop": source, "reason": f"{name}: {err}"})
            continue
        crops.append((bb, mask, source))
    return crops, skipped


def draw_figures(image, crops, xy, confidence, names, min_confidence):
    """The overlay (each crop's box and square, joints >= min_confidence) and the figures' entries
    of predictions.json, for one image's crops [(bbox, mask, source)] and their joints (original pixels)."""
    overlay = image.copy()
    thick = max(1, int(round(max(image.shape[:2]) / 300)))
    figures_out = []
    for (bb, mask, source), points, conf in zip(crops, xy, confidence):
        overlay = draw_crop(overlay, bb, thick)
        overlay = draw_skeleton(overlay, points, conf >= min_confidence, names, thick, 2 * thick + 1)
        figures_out.append({"bbox": [round(float(v), 2) for v in bb], "crop": source, "masked": mask is not None,
                            "score": round(float(conf.mean()), 4),
                            "keypoints": {n: [round(float(p[0]), 2), round(float(p[1]), 2), round(float(c), 4)]
                                          for n, p, c in zip(names, points, conf)}})
    return overlay, figures_out


# ----------------------------------------------------------------------------- the run

def predict_crops(args, model, predict, image, crops):
    """Joints (original pixels, (F, J, 2)) and confidences (F, J) of one image's crops."""
    size = int(model.inputs[0].shape[1])
    perm = flip_permutation(list(joint_names(int(model.outputs[0].shape[-1]))))
    canvases, affines = zip(*(render_figure(image, mask, bb, size) for bb, mask, _ in crops))
    maps = model_maps(model, predict, np.stack(canvases), args.flip_test, perm, args.batch_size)
    kp = decode(maps, size, size, args.refine)
    return to_original(kp, np.stack(affines)), kp[..., 2]


def overlay_name(path, used):
    """<stem>_pose.png, or <stem>_<n>_pose.png for the n-th image of the same stem; added to `used`."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name, n = f"{stem}_pose.png", 1
    while name in used:
        n += 1
        name = f"{stem}_{n}_pose.png"
    used.add(name)
    return name


def run_inference(args, model, predict, boxes=None):
    """Predict the joints of the figure(s) in each image; writes predictions.json and overlays.

    boxes: load_box_annotations(args.annotations), or None (then it is loaded here if given).
    Returns the predictions.json dict.
    """
    files = list_images(args.images)
    if boxes is None and args.annotations:
        boxes = load_box_annotations(args.annotations)
    names = joint_names(int(model.outputs[0].shape[-1]))
    entries, unreadable, skipped, used = [], [], [], set()
    bar = progress(len(files), "images", "img", args.quiet)
    for path in files:
        bar.update(1)
        image, _ = read_image(path)
        if image is None:
            unreadable.append(path)
            continue
        crops, dropped = crops_for(image, os.path.basename(path), args.bbox, boxes)
        skipped += [{"file": path, **d} for d in dropped]
        if not crops:
            continue
        xy, confidence = predict_crops(args, model, predict, image, crops)
        overlay, figures_out = draw_figures(image, crops, xy, confidence, names, args.min_confidence)
        name = overlay_name(path, used)
        with os_errors_as_input(f"create --out {args.out}"):
            os.makedirs(args.out, exist_ok=True)          # only now: a run that predicts nothing leaves no folder
        with os_errors_as_input(f"write {os.path.join(args.out, name)}"):
            save_png(os.path.join(args.out, name), overlay)
        entries.append({"file": path, "width": image.shape[1], "height": image.shape[0],
                        "overlay": name, "figures": figures_out})
    bar.close()
    summary = {"model": args.model, "joint_names": list(names), "coordinates": "original image pixels, x right, "
               "y down, integers at pixel centres; each joint [x, y, confidence]",
               "decoding": variant_name(args.refine, args.flip_test), "images": entries, "unreadable": unreadable,
               "skipped_figures": skipped}
    write_predictions(args, summary, len(files), boxes is not None)
    return summary


def write_predictions(args, summary, n_files, with_boxes):
    """predictions.json, or the one-line InputError when nothing was predicted; the skipped files
    on stderr, the counts and the unmasked-crop note on stdout."""
    entries, skipped = summary["images"], summary["skipped_figures"]
    problems = [f"{p}: unreadable" for p in summary["unreadable"]] + [f"{d['file']}: {d['reason']}" for d in skipped]
    if not entries:
        raise InputError(f"none of the {n_files} images could be read and cropped ({'; '.join(problems[:3])}"
                         f"{'; ...' if len(problems) > 3 else ''})")
    path = os.path.join(args.out, "predictions.json")
    with os_errors_as_input(f"write {path}"):
        write_json(path, summary)
    for problem in problems:
        print(f"evaluate.py: skipped {problem}", file=sys.stderr)
    whole = sum(f["crop"] == "whole image" for e in entries for f in e["figures"])
    print(f"images: {len(entries)} predicted, {len(summary['unreadable'])} unreadable (skipped), {len(skipped)} "
          f"figures skipped (named in predictions.json skipped_figures)"
          + (f", {whole} without a box in --annotations (whole image used)" if with_boxes and whole else "")
          + f"; wrote {path} and {len(entries)} overlays")
    unmasked = sum(not f["masked"] for e in entries for f in e["figures"])
    if unmasked:
        print(f"note: figures without a person mask: {unmasked}; they keep the photo's background inside the box, "
              f"while every training figure is on white; {UNMASKED_COST}")
