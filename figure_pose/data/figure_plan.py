"""The work of a coco_process.py run, planned from the annotation JSON alone.

Which COCO person annotations become figures, and why each other one does not: broken by
itself (coco_io.annotation_problem), a duplicate id, an image entry missing or broken, a
bbox outside its image, or filtered out by the run's settings (`skip_reason`: crowd, too few
keypoints with a map, no or several polygons, too small). `plan_work` turns the parsed JSON
into per-image tasks, skip counts and the broken items named, before any image is read;
`skipping_object_hook` decides while json.load parses, so skipped persons are never held
whole. `settings` is the run's dict (coco_process.run_settings). Nothing happens on import.
"""
from collections import Counter

import numpy as np

from figure_pose.core.confidence_maps import labelled_with_map
from figure_pose.core.figures import coco_indices, figure_transform, keypoints_to_canvas
from figure_pose.data.coco_io import (BAD, annotation_problem, compact_annotation, compact_coco_object,
                                      image_entry_problem, is_id, short)


def canvas_keypoints(ann, names, affine):
    """An annotation's keypoints of the joints `names` on its figure canvas (J, 3), through
    the figure's affine (figures.keypoints_to_canvas; unlabelled ones (0, 0, 0))."""
    keypoints = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)[coco_indices(names)]
    return keypoints_to_canvas(keypoints, affine)


def skip_reason(ann, settings):
    """Why a valid annotation does not become a figure (a counter key), or None if it does.

    Checked from the JSON alone, so a run knows its work before reading any image. A
    keypoint whose map would be empty counts as unlabelled (see coco_process.py's docstring).
    """
    if ann.get("iscrowd", 0):
        return "crowd"
    canvas = canvas_keypoints(ann, settings["joint_names"], figure_transform(ann["bbox"], settings["size"]))
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
