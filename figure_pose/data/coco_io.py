"""COCO files: the keypoint annotation JSON (loaded and validated), person masks, photos.

The one place that knows COCO's formats: `load_coco_annotations` reads
annotations/person_keypoints_<split>.json (`annotation_path`) with one-line errors for what
is not one; `annotation_problem` says what makes one annotation unusable; `person_mask`
decodes a segmentation (polygons or RLE) with pycocotools; `read_image` decodes a photo to
RGB and says why when it cannot. Nothing happens on import.
"""
import json
import os

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from figure_pose.core.cli import InputError

BAD = "bad_annotation"  # the skip reason of an annotation broken by itself
PERSON_CATEGORY_ID = 1


def annotation_path(coco_root, split):
    """annotations/person_keypoints_<split>.json under a COCO folder (download_coco.sh's layout)."""
    return os.path.join(coco_root, "annotations", f"person_keypoints_{split}.json")


ANNOTATION_REQUIRED = ("id", "image_id", "bbox", "keypoints")
IMAGE_FIELDS = ("id", "file_name", "width", "height")


def is_id(value):
    """A COCO id: a non-negative integer that fits the records' int64 (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 63


def short(value, limit=60):
    """repr(value), cut to `limit` characters: a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def finite_numbers(value):
    """A JSON list of finite numbers as a 1-D float64 array, else None (strings, NaN, nesting)."""
    if not isinstance(value, (list, np.ndarray)):
        return None
    try:
        array = np.asarray(value)
    except ValueError:  # ragged nesting
        return None
    if array.ndim != 1 or array.dtype.kind not in "iuf":
        return None
    array = array.astype(np.float64)
    return array if np.isfinite(array).all() else None


def annotation_problem(ann):
    """What makes an annotation unusable as written (a short phrase), or None.

    Only its own fields are checked here; plan_work checks it against its image entry.
    """
    if not isinstance(ann, dict):
        return "not a JSON object"
    absent = [k for k in ANNOTATION_REQUIRED if k not in ann]
    if absent:
        return f"no {', '.join(absent)}"
    for key in ("id", "image_id"):
        if not is_id(ann[key]):
            return f"{key} {short(ann[key])} is not a non-negative integer"
    if ann.get("iscrowd", 0) not in (0, 1):
        return f"iscrowd {short(ann['iscrowd'])} is not 0 or 1"
    bbox = finite_numbers(ann["bbox"])
    if bbox is None or len(bbox) != 4:
        return f"bbox {short(ann['bbox'])} is not 4 finite numbers"
    if bbox[2] <= 0 or bbox[3] <= 0:
        return f"bbox {short(ann['bbox'])} has a width or height <= 0"
    keypoints = finite_numbers(ann["keypoints"])
    if keypoints is None or len(keypoints) != 51:
        return "keypoints are not 51 finite numbers (x, y, visibility of 17 joints)"
    if not set(keypoints[2::3].tolist()) <= {0.0, 1.0, 2.0}:
        return "a keypoint visibility is not 0, 1 or 2"
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, list):
        for polygon in segmentation:
            points = finite_numbers(polygon)
            if points is None or len(points) % 2:
                return "a segmentation polygon is not a list of x, y numbers"
            if len(points) < 6:
                return "a segmentation polygon has fewer than 3 points"
    elif segmentation is not None and not isinstance(segmentation, dict):
        return "segmentation is neither polygons nor RLE"
    return None


def image_entry_problem(img):
    """What makes an `images` entry unusable (a short phrase), or None."""
    if not isinstance(img, dict):
        return "not a JSON object"
    absent = [k for k in IMAGE_FIELDS if k not in img]
    if absent:
        return f"no {', '.join(absent)}"
    if not is_id(img["id"]):
        return f"id {short(img['id'])} is not a non-negative integer"
    if not isinstance(img["file_name"], str) or not img["file_name"]:
        return f"file_name {short(img['file_name'])} is not a file name"
    if not all(is_id(img[k]) and img[k] > 0 for k in ("width", "height")):
        return f"width {short(img['width'])}, height {short(img['height'])} are not positive integers"
    return None


def compact_annotation(obj):
    """A valid annotation, keeping only what this script reads.

    Keypoints and polygons become float64 arrays (8 bytes a number, against ~32 as Python
    floats in a list); the values are those `np.asarray(..., np.float64)` gives from the lists.
    A segmentation that is not a polygon list (crowd RLE) becomes None: skip_reason only asks
    whether it is a list, and nothing else reads it.
    """
    ann = {"id": obj["id"], "image_id": obj["image_id"], "bbox": obj["bbox"],
           "keypoints": np.asarray(obj["keypoints"], dtype=np.float64)}
    if "iscrowd" in obj:
        ann["iscrowd"] = obj["iscrowd"]
    if "segmentation" in obj:
        segmentation = obj["segmentation"]
        ann["segmentation"] = ([np.asarray(p, dtype=np.float64) for p in segmentation]
                               if isinstance(segmentation, list) else None)
    return ann


def compact_coco_object(obj):
    """json object_hook: of a COCO image or keypoint annotation, keep only what this script reads.

    Called on every JSON object as it is parsed, so the dropped fields are garbage at once.
    An annotation (compact_annotation) is recognised by its image_id; one with a problem
    (annotation_problem) stays as parsed, for plan_work to report. Images keep id, file
    name and size (the decoded image is checked against it). Any other object stays as parsed.
    """
    if "image_id" in obj:
        return obj if annotation_problem(obj) else compact_annotation(obj)
    if "file_name" in obj and "id" in obj:
        return {k: obj[k] for k in IMAGE_FIELDS if k in obj}
    return obj


def is_bad(ann):
    """True if an annotation (parsed, or a skipping_object_hook stub) is broken by itself."""
    if isinstance(ann, dict) and "skipped" in ann:
        return ann["skipped"] == BAD
    return annotation_problem(ann) is not None


def load_coco_annotations(path, object_hook=None):
    """The COCO keypoint JSON as a dict, validated enough to give clear errors.

    object_hook: passed to json.load (skipping_object_hook(settings) keeps only what a
    coco_process run reads; None keeps everything, as evaluate.py needs). A file whose
    every annotation is broken is not a keypoint file (an instances_*.json, say): an error.
    Single broken annotations are plan_work's to skip.
    """
    if not os.path.isfile(path):
        raise InputError(f"annotation file not found: {path} (run download_coco.sh, or pass --coco-root)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, object_hook=object_hook)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not JSON ({err})") from None
    except RecursionError:
        raise InputError(f"{path} is not COCO JSON (nested too deeply)") from None
    missing = [k for k in ("images", "annotations") if not isinstance(data, dict) or k not in data]
    if missing:
        raise InputError(f"{path} is not a COCO annotation file (no {' or '.join(missing)})")
    for key in ("images", "annotations"):
        if not isinstance(data[key], list):
            raise InputError(f"{path} is not a COCO annotation file (its {key} is not a list)")
    if data["annotations"] and all(map(is_bad, data["annotations"])):
        first = data["annotations"][0]
        why = first.get("problem") if isinstance(first, dict) and "problem" in first else annotation_problem(first)
        raise InputError(f"{path} is not a COCO keypoint file: no annotation is valid "
                         f"(the first: {why})")
    return data


def person_mask(ann, height, width):
    """H x W uint8 mask of a person annotation's segmentation (polygons, or RLE compressed or
    not), decoded by pycocotools as COCO.annToMask does; None if it has no segmentation.

    Raises ValueError if pycocotools cannot decode it (it raises bare Exceptions for bad input).
    """
    segmentation = ann.get("segmentation")
    if segmentation is None or len(segmentation) == 0:
        return None
    try:
        if isinstance(segmentation, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        return mask_utils.decode(rle)
    except Exception as err:  # noqa: BLE001 - pycocotools' own errors are plain Exception
        raise ValueError(f"unreadable segmentation ({err})") from None


def read_image(path):
    """The photo as RGB, or None and why it cannot be read whole.

    A JPEG must end with its end-of-image marker: libjpeg decodes a truncated file to a
    picture grey at the bottom, with a warning that names no file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None, "file not found"
    except OSError as err:
        return None, f"cannot read it ({err.strerror})"
    if data[:2] == b"\xff\xd8" and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None, "truncated JPEG (no end-of-image marker)"
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    except cv2.error:
        bgr = None
    if bgr is None:
        return None, "not an image OpenCV can decode"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None
