"""COCO keypoint scoring: the results and ground-truth formats, AP/AR and per-person OKS from pycocotools.

    gt = gt_dataset_from_annotations(load_annotations(root, "val2017"), annotation_ids, names)
    stats, evaluator = coco_keypoint_eval(gt, coco_results(image_ids, annotation_ids, xy, conf, names), names)
    person_oks(evaluator)        # {annotation_id: OKS of the prediction made for that figure}

Results are the official COCO keypoint results format (17 * 3 keypoints in original pixels);
scoring cuts them and the ground truth to the joints the model predicts (`names`) and uses
those joints' OKS sigmas. No side effects on import: pycocotools' evaluator is imported when used.
"""
import contextlib
import io

import numpy as np

from figure_pose.core.cli import InputError
from figure_pose.core.figures import COCO_OKS_SIGMAS, coco_indices
from figure_pose.data.coco_io import PERSON_CATEGORY_ID, annotation_path, load_coco_annotations

STAT_KEYS = ("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar", "ar50", "ar75", "ar_medium", "ar_large")


# ----------------------------------------------------------------------------- results

def results_17(xy, confidence, names):
    """One person's 17 * 3 COCO keypoint list: x, y, 1 for predicted joints, 0, 0, 0 for the others.

    (The results format's third value is ignored by COCOeval; the joint confidences are
    written separately.)
    """
    out = np.zeros((17, 3))
    cols = coco_indices(names)
    out[cols, :2] = xy
    out[cols, 2] = 1.0
    conf = np.zeros(17)
    conf[cols] = confidence
    return [round(float(v), 3) for v in out.ravel()], [round(float(c), 4) for c in conf]


def coco_results(image_ids, annotation_ids, xy_orig, confidence, names):
    """Official COCO keypoint results: [{image_id, category_id, keypoints (51), score}] in original pixels.

    score = mean joint confidence. `annotation_id` (the figure the prediction was made for)
    and `joint_confidence` (17, 0 where not predicted) are extra keys that pycocotools ignores.
    """
    results = []
    for image_id, ann_id, xy, conf in zip(image_ids, annotation_ids, xy_orig, confidence):
        kps, joint_conf = results_17(xy, conf, names)
        results.append({"image_id": int(image_id), "category_id": PERSON_CATEGORY_ID, "keypoints": kps,
                        "score": round(float(np.mean(conf)), 5), "annotation_id": int(ann_id),
                        "joint_confidence": joint_conf})
    return results


def select_joints(coco_keypoints, names):
    """A flat 17 * 3 COCO keypoint list -> the flat len(names) * 3 list of those joints."""
    return np.asarray(coco_keypoints, dtype=np.float64).reshape(17, 3)[coco_indices(names)].ravel().tolist()


# ----------------------------------------------------------------------------- ground truth

def load_annotations(coco_root, split):
    """The split's COCO keypoint JSON (validated by coco_io.load_coco_annotations)."""
    path = annotation_path(coco_root, split)
    try:
        return load_coco_annotations(path)
    except InputError as err:
        raise InputError(f"{err} (check --coco-root and --split)") from None


def person_category(names):
    return {"id": PERSON_CATEGORY_ID, "name": "person", "supercategory": "person", "keypoints": list(names)}


def gt_dataset_from_annotations(annotations, annotation_ids, names):
    """In-memory COCO ground truth for the evaluated persons, restricted to the joints in `names`.

    annotations: the loaded person_keypoints_<split>.json. Only the given annotation ids and
    their images are kept; each annotation's keypoints are cut to the joints' columns and
    num_keypoints recounted over them (COCOeval ignores persons with none); area (the
    segmentation area OKS is scaled by), bbox and iscrowd stay as annotated.
    """
    wanted = set(int(a) for a in annotation_ids)
    anns = [a for a in annotations["annotations"] if a["id"] in wanted]
    missing = wanted - {a["id"] for a in anns}
    if missing:
        raise InputError(f"{len(missing)} of the {len(wanted)} evaluated annotation ids are not in the "
                         f"annotation file (e.g. {min(missing)}): wrong --split or --coco-root?")
    image_ids = {a["image_id"] for a in anns}
    gt_anns = []
    for a in anns:
        check_gt_annotation(a)
        kp = select_joints(a["keypoints"], names)
        gt_anns.append({"id": a["id"], "image_id": a["image_id"], "category_id": PERSON_CATEGORY_ID,
                        "keypoints": kp, "num_keypoints": int(np.count_nonzero(np.asarray(kp)[2::3] > 0)),
                        "area": float(a["area"]), "bbox": list(map(float, a["bbox"])),
                        "iscrowd": int(a.get("iscrowd", 0))})
    images = [dict(im) for im in annotations["images"] if im["id"] in image_ids]
    return {"images": images, "annotations": gt_anns, "categories": [person_category(names)]}


def check_gt_annotation(ann):
    """One-line InputError (naming the annotation id) for a ground-truth annotation AP cannot be scored on."""
    def numbers(value, count):
        return isinstance(value, list) and len(value) == count and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)
    problems = [what for what, ok in (
        ("keypoints are not 17 * 3 numbers", numbers(ann.get("keypoints"), 51)),
        ("no numeric area", numbers([ann.get("area")], 1)),
        ("bbox is not 4 numbers", numbers(ann.get("bbox"), 4))) if not ok]
    if problems:
        raise InputError(f"annotation {ann['id']} of the --coco-root annotation file: {'; '.join(problems)}")


def gt_dataset_from_figures(image_ids, annotation_ids, bboxes, keypoints_orig, names):
    """Ground truth rebuilt from the figures alone (no --coco-root): area = bbox w * h (a fallback:
    COCO scales OKS by the segmentation area, which is smaller, so these AP values are optimistic)."""
    gt_anns = []
    for image_id, ann_id, bbox, kp in zip(image_ids, annotation_ids, bboxes, keypoints_orig):
        flat = np.asarray(kp, dtype=np.float64).copy()
        gt_anns.append({"id": int(ann_id), "image_id": int(image_id), "category_id": PERSON_CATEGORY_ID,
                        "keypoints": [float(v) for v in flat.ravel()],
                        "num_keypoints": int((flat[:, 2] > 0).sum()),
                        "area": float(bbox[2] * bbox[3]), "bbox": [float(v) for v in bbox], "iscrowd": 0})
    images = [{"id": int(i)} for i in sorted(set(int(i) for i in image_ids))]
    return {"images": images, "annotations": gt_anns, "categories": [person_category(names)]}


# ----------------------------------------------------------------------------- scoring

def coco_keypoint_eval(gt_dataset, results, names):
    """COCO keypoint AP/AR (pycocotools COCOeval, iouType keypoints) over the joints in `names`.

    results: COCO results with 17 * 3 keypoints; they are cut to the same joints as the
    ground truth and scored with those joints' OKS sigmas. Returns (stats dict, the
    evaluated COCOeval; `person_oks` reads each figure's OKS from it).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    if not results:
        raise InputError("no predictions to evaluate")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dataset
        gt.createIndex()
        dets = [{"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
                 "annotation_id": r.get("annotation_id"), "keypoints": select_joints(r["keypoints"], names)}
                for r in results]
        evaluator = COCOeval(gt, gt.loadRes(dets), iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.array([COCO_OKS_SIGMAS[n] for n in names])
        evaluator.params.imgIds = sorted(gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {k: float(v) for k, v in zip(STAT_KEYS, evaluator.stats)}, evaluator


def person_oks(evaluator):
    """{annotation_id: OKS} of each prediction against the figure it was made for (its result's
    annotation_id), read from the OKS matrices COCOeval computed (`evaluator.ious`).

    A matrix's rows are the image's detections by descending score (stable), at most
    params.maxDets[-1] of them (an image with more is recomputed without that cut), its columns
    the image's ground truth in `_gts` order. NaN for a person without labelled joints
    (COCOeval's OKS falls back to the distance from the box there).
    """
    oks = {}
    for key, ious in evaluator.ious.items():
        dts, gts = evaluator._dts[key], evaluator._gts[key]
        if not len(dts) or not len(gts):
            continue
        if len(dts) > evaluator.params.maxDets[-1]:
            ious = all_detections_oks(evaluator, key, len(dts))
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")   # computeOks' row order
        column = {g["id"]: j for j, g in enumerate(gts)}
        for i, d in zip(range(len(ious)), order):
            ann_id = dts[d].get("annotation_id")
            if ann_id in column:
                labelled = gts[column[ann_id]]["num_keypoints"] > 0
                oks[ann_id] = float(ious[i, column[ann_id]]) if labelled else float("nan")
    return oks


def all_detections_oks(evaluator, key, count):
    """COCOeval.computeOks of one (image, category) for all `count` detections, not the first maxDets."""
    saved = evaluator.params.maxDets
    evaluator.params.maxDets = [count]
    try:
        return evaluator.computeOks(*key)
    finally:
        evaluator.params.maxDets = saved
