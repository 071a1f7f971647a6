"""Evaluate a figure-pose model (or the stored ground truth) on figures; run it on new images.

    python evaluate.py --model runs/NAME/best.keras --data coco_val.npy \
        --coco-root DIR --split val2017 --out runs/NAME/eval
    python evaluate.py --run runs/NAME            # best.keras on the run's validation images
    python evaluate.py --oracle --data coco_val.npy --coco-root DIR --out eval_oracle
    python evaluate.py --model M --images photo.jpg drawings/ --out DIR [--bbox x,y,w,h | --annotations F]
    python evaluate.py --model M --export tflite|saved_model --out DIR

--model M is a .keras file of model.py or an export of one (export/model.tflite,
export/saved_model, or export/ itself; inference.py reads it with its export.json).

Evaluation writes into --out: metrics.json (PCK@0.05/0.1/0.2 overall and per joint, mean
and median joint error in original-image pixels, mean OKS, COCO keypoint AP/AR from
pycocotools over the joints the model predicts, the mean-pose baseline, counts),
keypoints_<split>_results.json (official COCO results format, 17 keypoints, original
pixels), examples.png and worst.png (input | target | prediction grids) and
pck_per_joint.png.

Predictions are decoded on the figure canvas (confidence_maps.decode_keypoints) and
mapped back to the photo with figures.invert_affine of the record's stored affine.
`--oracle` scores the stored ground-truth maps instead of a model: it must reach AP and
PCK@0.05 of about 1, which proves that the crop geometry, the map rendering, the decoder
and the inverse transform agree with pycocotools.
"""
import argparse
import contextlib
import io
import json
import os
import sys
import time

import cv2
import numpy as np

from cli import HelpFormatter, InputError, OneLineParser, check_out_dir, int_in, number, progress, split_name
from coco_io import PERSON_CATEGORY_ID, annotation_path, load_coco_annotations, person_mask, read_image
from confidence_maps import (codec_of_model, dequantise_maps, flip_maps, quantise_maps,
                             render_confidence_maps)
from figures import (COCO_OKS_SIGMAS, JOINT_SETS, apply_affine, bbox_mask, canvas_image, coco_indices,
                     figure_joint_names, flip_permutation, invert_affine, joint_names, open_figures,
                     draw_skeleton, heat_image, read_sidecar, render_figure, summed_maps)
from inference import ExportError, is_exported, load_exported, predict_exported
from metrics import figure_norm_size, joint_errors, mean_pose, pck, pck_per_joint
from pictures import draw_crop, save_png

THRESHOLDS = (0.05, 0.1, 0.2)
REFINES = ("dark", "quarter", "none")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pbm", ".pgm", ".ppm")
CHUNK = 64  # figures decoded per step (bounded memory on any dataset size)
# what an unmasked crop costs, measured (README, "Your own images"); printed with --images
UNMASKED_COST = ("on 57 real COCO persons the demo model's PCK@0.1 falls from 0.45 masked to 0.25 unmasked "
                 "(README, Your own images): give masks (COCO segmentation in --annotations) where you can")


# ----------------------------------------------------------------------------- geometry

def to_original(canvas_xy, affines):
    """Canvas points (N, J, >=2) -> original-image points (N, J, 2) via each figure's inverse affine."""
    canvas_xy = np.asarray(canvas_xy, dtype=np.float64)[..., :2]
    return np.stack([apply_affine(invert_affine(a), xy) for a, xy in zip(affines, canvas_xy)]) \
        if len(canvas_xy) else np.zeros((0,) + canvas_xy.shape[1:])


def gt_original(keypoints, affines):
    """Labelled canvas keypoints (N, J, 3) -> original pixels (N, J, 3); unlabelled stay 0, 0, 0."""
    kp = np.asarray(keypoints, dtype=np.float64)
    out = np.zeros_like(kp)
    labelled = kp[..., 2] > 0
    out[..., :2] = np.where(labelled[..., None], to_original(kp, affines), 0.0)
    out[..., 2] = kp[..., 2]
    return out


def oks(pred_xy, gt_keypoints, area, sigmas):
    """Object keypoint similarity of one person, the COCO formula.

    pred_xy (J, 2) and gt_keypoints (J, 3) in original pixels; area: the gt area (COCO
    segmentation area); sigmas (J,). OKS = mean over labelled joints of
    exp(-d^2 / (2 * area * (2 sigma)^2)). NaN if no joint is labelled.
    """
    gt = np.asarray(gt_keypoints, dtype=np.float64)
    d2 = ((np.asarray(pred_xy, dtype=np.float64)[:, :2] - gt[:, :2]) ** 2).sum(-1)
    variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    e = d2 / variances / (area + np.spacing(1)) / 2.0
    labelled = gt[:, 2] > 0
    return float(np.exp(-e[labelled]).mean()) if labelled.any() else float("nan")


def mirror_keypoints(keypoints, canvas_size, flip_perm):
    """Canvas keypoints (J, 3) of the horizontally mirrored figure (x -> S - 1 - x, left/right swapped)."""
    kp = np.asarray(keypoints, dtype=np.float64)[flip_perm].copy()
    kp[:, 0] = np.where(kp[:, 2] > 0, canvas_size - 1 - kp[:, 0], 0.0)
    return kp


# ----------------------------------------------------------------------------- COCO format

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


def person_category(names):
    return {"id": PERSON_CATEGORY_ID, "name": "person", "supercategory": "person", "keypoints": list(names)}


def coco_keypoint_eval(gt_dataset, results, names):
    """COCO keypoint AP/AR (pycocotools COCOeval, iouType keypoints) over the joints in `names`.

    results: COCO results with 17 * 3 keypoints; they are cut to the same joints as the
    ground truth and scored with those joints' OKS sigmas. Returns (stats dict, per-person
    OKS {annotation_id: oks of the best-matching prediction}).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    if not results:
        raise InputError("no predictions to evaluate")
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        gt = COCO()
        gt.dataset = gt_dataset
        gt.createIndex()
        dets = [{"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
                 "keypoints": select_joints(r["keypoints"], names)} for r in results]
        dt = gt.loadRes(dets)
        evaluator = COCOeval(gt, dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.array([COCO_OKS_SIGMAS[n] for n in names])
        evaluator.params.imgIds = sorted(gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    keys = ("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar", "ar50", "ar75", "ar_medium", "ar_large")
    stats = {k: float(v) for k, v in zip(keys, evaluator.stats)}
    return stats, evaluator


# ----------------------------------------------------------------------------- predictors

def oracle_maps(records, flip_test, flip_perm):
    """The stored ground-truth maps (N, M, M, J) of records, in [0, 1].

    With flip_test, averaged with the maps of the mirrored figure, rendered and stored
    the same way (quantised), then un-flipped with flip_maps: a perfect model's flip test.
    """
    maps = dequantise_maps(records["confidence_maps"])
    if not flip_test:
        return maps
    mirrored = []
    for record in records:
        size = int(record["canvas_size"])
        m = record["confidence_maps"].shape[0]
        kp = mirror_keypoints(record["keypoints"], size, flip_perm)
        mirrored.append(dequantise_maps(quantise_maps(render_confidence_maps(kp, m, size // m))))
    return 0.5 * (maps + flip_maps(np.stack(mirrored), flip_perm))


def model_maps(model, predict, canvases, flip_test, flip_perm, batch_size):
    """Model maps (N, M, M, J) for uint8 canvases; with flip_test the average with the mirror's un-flipped maps."""
    maps = predict(model, canvases, batch_size=batch_size)
    if flip_test:
        mirrored = predict(model, np.ascontiguousarray(canvases[:, :, ::-1]), batch_size=batch_size)
        maps = 0.5 * (maps + flip_maps(mirrored, flip_perm))
    return np.asarray(maps, dtype=np.float32)


def decode(maps, canvas_size, model_size, refine):
    """Canvas keypoints (N, J, 3) from maps predicted for canvases of side canvas_size by a
    model of input side model_size: its codec, seen on the canvas (stride canvas_size / M)."""
    codec = codec_of_model(model_size, maps.shape[-2]).rescaled(canvas_size / model_size)
    return codec.decode(maps, refine)


# ----------------------------------------------------------------------------- scoring

def score_predictions(pred_canvas, meta, names, gt_dataset=None):
    """All metrics of canvas predictions (N, J, 3: x, y, confidence) against the figures in meta.

    meta: dict of numpy arrays keypoints (N, J, 3 canvas), affine, bbox, image_id,
    annotation_id, canvas_size. gt_dataset: COCO ground truth for AP (None: no AP).
    Returns (metrics dict, COCO results list, per-figure mean normalised error (N,)).
    """
    size = float(meta["canvas_size"])
    norm = figure_norm_size(size)
    gt_kp = meta["keypoints"]
    metrics = {}
    for t in THRESHOLDS:
        metrics[f"pck@{t}"] = pck(pred_canvas[..., :2], gt_kp, norm, t)
    metrics["pck_per_joint"] = {
        f"pck@{t}": {n: (None if np.isnan(v) else float(v))
                     for n, v in zip(names, pck_per_joint(pred_canvas[..., :2], gt_kp, norm, t))}
        for t in THRESHOLDS}
    pred_orig = to_original(pred_canvas, meta["affine"])
    gt_orig = gt_original(gt_kp, meta["affine"])
    errors = joint_errors(pred_orig, gt_orig)                      # original pixels, NaN unlabelled
    labelled = ~np.isnan(errors)
    metrics["mean_error_px"] = float(errors[labelled].mean())
    metrics["median_error_px"] = float(np.median(errors[labelled]))
    side = np.maximum(meta["bbox"][:, 2], meta["bbox"][:, 3])
    metrics["mean_error_bbox_fraction"] = float((errors / side[:, None])[labelled].mean())
    per_figure = np.nanmean(np.where(labelled, errors / side[:, None], np.nan), axis=1) \
        if labelled.any() else np.zeros(len(errors))
    results = coco_results(meta["image_id"], meta["annotation_id"], pred_orig, pred_canvas[..., 2], names)
    if gt_dataset is not None:
        stats, evaluator = coco_keypoint_eval(gt_dataset, results, names)
        metrics.update(stats)
        areas = {a["id"]: a["area"] for a in gt_dataset["annotations"]}
        gts = {a["id"]: np.asarray(a["keypoints"]).reshape(-1, 3) for a in gt_dataset["annotations"]}
        sigmas = evaluator.params.kpt_oks_sigmas
        metrics["oks_mean"] = float(np.nanmean([oks(xy, gts[int(a)], areas[int(a)], sigmas)
                                                for a, xy in zip(meta["annotation_id"], pred_orig)]))
    return metrics, results, per_figure


def baseline_predictions(pose, n):
    """The mean pose (J, 2) as canvas predictions (n, J, 3) with confidence 1."""
    out = np.ones((n,) + pose.shape[:1] + (3,), dtype=np.float64)
    out[..., :2] = pose
    return out


# ----------------------------------------------------------------------------- pictures

def heat_tile(maps01, size):
    """Sum of maps (M, M, J) in [0, 1] as an RGB colour-mapped size x size tile."""
    return heat_image(summed_maps(maps01), size)


def figure_row(canvas, gt_kp, target01, pred01, pred_kp, names, tile=192, min_confidence=0.2):
    """input | target maps | predicted maps | predicted skeleton (labels as black + marks), one row.

    Predicted joints below min_confidence are not drawn.
    """
    size = canvas.shape[0]
    scale = tile / size
    small = cv2.resize(canvas, (tile, tile), interpolation=cv2.INTER_AREA)
    gt_present = gt_kp[:, 2] > 0
    drawn = draw_skeleton(small, pred_kp[:, :2] * scale + (scale - 1) / 2, pred_kp[:, 2] >= min_confidence, names)
    for k in np.flatnonzero(gt_present):
        p = tuple(int(round(v)) for v in gt_kp[k, :2] * scale + (scale - 1) / 2)
        cv2.drawMarker(drawn, p, (0, 0, 0), cv2.MARKER_CROSS, 7, 1)
    return np.concatenate([small, heat_tile(target01, tile), heat_tile(pred01, tile), drawn], axis=1)


def write_grid(path, rows, captions, tile=192):
    """Stack rows (H, 4 * tile, 3) under a header into one PNG; each row gets a caption."""
    header = np.full((28, rows[0].shape[1], 3), 255, np.uint8)
    for i, text in enumerate(("input", "target (maps summed)", "prediction (maps summed)", "prediction (+: label)")):
        cv2.putText(header, text, (i * tile + 6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    body = []
    for row, caption in zip(rows, captions):
        strip = np.full((18, row.shape[1], 3), 255, np.uint8)
        cv2.putText(strip, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        body += [row, strip]
    write_png(path, np.concatenate([header] + body, axis=0))


def plot_pck_per_joint(path, per_joint, names, baseline=None, title=""):
    """Bar chart of per-joint PCK at each threshold (and the baseline's PCK@0.2 as markers)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(7, 0.7 * len(names)), 4), dpi=100)
    width = 0.8 / len(THRESHOLDS)
    x = np.arange(len(names))
    for i, t in enumerate(THRESHOLDS):
        values = [per_joint[f"pck@{t}"][n] or 0.0 for n in names]
        ax.bar(x + (i - (len(THRESHOLDS) - 1) / 2) * width, values, width, label=f"PCK@{t}")
    if baseline is not None:
        ax.plot(x, [baseline[f"pck@{THRESHOLDS[-1]}"][n] or 0.0 for n in names], "k_", markersize=14,
                label=f"mean pose PCK@{THRESHOLDS[-1]}")
    ax.set_xticks(x)
    ax.set_xticklabels([n.replace("_", " ") for n in names], rotation=45, ha="right")
    ax.set_ylim(0, 1.22)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("PCK")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=len(THRESHOLDS) + 1, frameon=False)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    write_atomic(path, png.getvalue())


# ----------------------------------------------------------------------------- evaluation driver

def make_out_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create --out {path} ({err.strerror})") from None


def write_atomic(path, data):
    """Write bytes (or text) to `path` via `<path>.partial` and a rename: a killed run never leaves half a file."""
    tmp = path + ".partial"
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except OSError as err:
        raise InputError(f"cannot write {path} ({err.strerror})") from None


def write_json(path, obj, indent=2):
    write_atomic(path, json.dumps(obj, indent=indent))


def write_png(path, rgb):
    """An RGB uint8 image as a PNG, atomically (pictures.save_png); a failure is one InputError line."""
    try:
        save_png(path, rgb)
    except OSError as err:
        raise InputError(f"cannot write {path} ({err.strerror or err})") from None


def load_figures_checked(path, flag="--data"):
    try:
        return open_figures(path)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise InputError(f"{flag} {err}") from None


def load_annotations(coco_root, split):
    """The split's COCO keypoint JSON (validated by coco_io.load_coco_annotations)."""
    path = annotation_path(coco_root, split)
    try:
        return load_coco_annotations(path)
    except InputError as err:
        raise InputError(f"{err} (check --coco-root and --split)") from None


def infer_split(data_path, default="val2017"):
    """The split a coco.npy was made from (its sidecar's annotation file name), else `default`.

    A broken sidecar is an error, not the default: the split names the annotation file AP is scored on.
    """
    try:
        settings = read_sidecar(data_path).get("settings", {})
        ann = str(settings.get("annotations", ""))
    except (ValueError, OSError, AttributeError) as err:   # not JSON, unreadable, or not {"settings": {...}}
        raise InputError(f"cannot read the split from {data_path}.json, the sidecar of --data "
                         f"({type(err).__name__}: {err}): repair it or give --split") from None
    base = os.path.basename(ann)
    if base.startswith("person_keypoints_") and base.endswith(".json"):
        return base[len("person_keypoints_"):-len(".json")]
    return default


def select_figures(figures, limit, image_ids):
    """Indices of the figures to evaluate: those of `image_ids` (if given), the first `limit` (if > 0)."""
    index = np.arange(len(figures))
    if image_ids:
        index = index[np.isin(np.asarray(figures["image_id"]), image_ids)]
    if limit is not None:
        index = index[:limit]
    if len(index) == 0:
        raise InputError("empty selection: no figures match --limit/--image-ids")
    return index


def figure_meta(figures, index):
    """The small per-figure arrays (keypoints, affine, bbox, ids) of the selected figures."""
    sizes = np.unique(np.asarray(figures["canvas_size"])[index])
    if len(sizes) != 1:
        raise InputError(f"figures of several canvas sizes {sizes.tolist()} in one file")
    return {"keypoints": np.asarray(figures["keypoints"][index], dtype=np.float64),
            "affine": np.asarray(figures["affine"][index], dtype=np.float64),
            "bbox": np.asarray(figures["bbox"][index], dtype=np.float64),
            "image_id": np.asarray(figures["image_id"][index]),
            "annotation_id": np.asarray(figures["annotation_id"][index]),
            "canvas_size": int(sizes[0])}


def variants(args):
    """The decodings (refine, flip) to compute: the chosen one first, then the others if --compare-decoding."""
    chosen = (args.refine, args.flip_test)
    if not args.compare_decoding:
        return [chosen]
    return [chosen] + [(r, f) for f in (False, True) for r in REFINES if (r, f) != chosen]


def variant_name(refine, flip):
    return f"{refine}{'+flip' if flip else ''}"


def predict_all(figures, index, args, names, model=None, predict=None):
    """Canvas predictions {(refine, flip): (N, J, 3)} and the maps of the picture figures.

    Works in chunks of CHUNK figures so memory does not grow with the data set.
    """
    wanted = variants(args)
    flips = sorted({f for _, f in wanted})
    perm = flip_permutation(list(names))
    size = int(figures[index[0]]["canvas_size"])
    model_size = int(model.inputs[0].shape[1]) if model is not None else size
    out = {v: [] for v in wanted}
    shown = {}
    bar = progress(len(index), "figures", "fig", args.quiet)
    for start in range(0, len(index), CHUNK):
        chunk = index[start:start + CHUNK]
        bar.update(len(chunk))
        records = figures[chunk]
        if model is None:
            maps = {f: oracle_maps(records, f, perm) for f in flips}
        else:
            canvases = np.stack([canvas_image(r) for r in records])
            plain = model_maps(model, predict, canvases, False, perm, args.batch_size)
            maps = {False: plain}
            if True in flips:
                mirrored = model_maps(model, predict, np.ascontiguousarray(canvases[:, :, ::-1]), False, perm,
                                      args.batch_size)
                maps[True] = 0.5 * (plain + flip_maps(mirrored, perm))
        for refine, flip in wanted:
            out[(refine, flip)].append(decode(maps[flip], size, model_size, refine))
        for k, i in enumerate(chunk):
            if start + k < args.pictures:
                shown[int(i)] = maps[args.flip_test][k]
    bar.close()
    return {v: np.concatenate(p) for v, p in out.items()}, shown


def maps_for(figures, indices, args, names, model, predict):
    """Prediction maps of a few figures (for the worst-figure picture)."""
    perm = flip_permutation(list(names))
    records = figures[np.sort(indices)]
    if model is None:
        maps = oracle_maps(records, args.flip_test, perm)
    else:
        maps = model_maps(model, predict, np.stack([canvas_image(r) for r in records]), args.flip_test,
                          perm, args.batch_size)
    return dict(zip(np.sort(indices).tolist(), maps))


def write_pictures(out_dir, figures, index, pred, per_figure, shown, worst_maps, names):
    """examples.png (first figures) and worst.png (largest mean error / bbox side)."""
    written = []
    for name, chosen, maps in (("examples.png", list(shown), shown), ("worst.png", list(worst_maps), worst_maps)):
        if not chosen:
            continue
        if name == "worst.png":
            chosen = sorted(chosen, key=lambda i: -per_figure[np.searchsorted(index, i)])
        rows, captions = [], []
        for i in chosen:
            record = figures[i]
            k = int(np.searchsorted(index, i))
            rows.append(figure_row(canvas_image(record), record["keypoints"], dequantise_maps(record["confidence_maps"]),
                                   maps[i], pred[k], names))
            captions.append(f"image {int(record['image_id'])}, annotation {int(record['annotation_id'])}: "
                            f"mean error {per_figure[k]:.3f} x bbox side")
        path = os.path.join(out_dir, name)
        write_grid(path, rows, captions)
        written.append(path)
    return written


def print_table(metrics, file=sys.stdout):
    """The main numbers (model, baseline and decoding comparison) as an aligned table."""
    keys = [f"pck@{t}" for t in THRESHOLDS] + ["mean_error_px", "median_error_px", "oks_mean",
                                                "ap", "ap50", "ap75", "ar"]
    rows = [("evaluated", metrics)]
    if "baseline" in metrics:
        rows.append((metrics["baseline"]["label"], metrics["baseline"]))
    for name, m in metrics.get("decoding_comparison", {}).items():
        rows.append((name, m))
    present = [k for k in keys if any(k in m for _, m in rows)]
    width = max(len(r) for r, _ in rows) + 2
    print(f"{'':<{width}}" + "".join(f"{k:>16}" for k in present), file=file)
    for label, m in rows:
        cells = "".join(f"{m[k]:>16.4f}" if isinstance(m.get(k), float) else f"{'-':>16}" for k in present)
        print(f"{label:<{width}}{cells}", file=file)
    print(f"figures {metrics['figures']}, persons {metrics['persons']}, images {metrics['images']}, "
          f"labelled joints {metrics['labelled_joints']}", file=file)
    for note in metrics.get("notes", []):
        print(f"note: {note}", file=file)


def baseline_keypoints(args, meta, n_joints, notes):
    """The canvas keypoints the mean-pose baseline averages, and its label: --train-data's, checked
    against --data, or else the evaluated figures' own (said in `notes`)."""
    if not args.train_data:
        notes.append("no --train-data: the mean-pose baseline is computed from the evaluated figures themselves")
        return meta["keypoints"], "mean pose (of the evaluated figures themselves)"
    train = load_figures_checked(args.train_data, "--train-data")
    if train.dtype["keypoints"].shape[0] != n_joints:
        raise InputError(f"--train-data {args.train_data} has {train.dtype['keypoints'].shape[0]} joints, "
                         f"--data {args.data} {n_joints}")
    train_sizes = np.unique(np.asarray(train["canvas_size"]))
    if len(train_sizes) != 1 or int(train_sizes[0]) != meta["canvas_size"]:
        raise InputError(f"--train-data {args.train_data} has canvas size {train_sizes.tolist()}, "
                         f"--data {args.data} {meta['canvas_size']}")
    split = getattr(args, "run_split", None)
    if split and os.path.abspath(args.train_data) == os.path.abspath(split.get("train_data", "")):
        train = train[np.isin(np.asarray(train["image_id"]), split.get("train_image_ids", []))]
    return np.asarray(train["keypoints"], dtype=np.float64), "mean pose (training figures)"


def read_run_json(path, required=True):
    """A JSON object of a run folder, or None if optional and missing; one-line InputError."""
    if not os.path.exists(path) and not required:
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise InputError(f"--run: {path} not found (not a model.py run folder?)") from None
    except (OSError, ValueError) as err:
        raise InputError(f"--run: cannot read {path} ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"--run: {path} is not a JSON object")
    return data


def apply_run(args):
    """Fill --model, --data, --image-ids, --train-data and --out from the run folder --run (flags given
    win); returns its split.json (None for a run that predates it, then only with --val-data)."""
    config = read_run_json(os.path.join(args.run, "config.json"))
    split = read_run_json(os.path.join(args.run, "split.json"), required=False)
    if split is None and not config.get("val_data") and not (args.data and args.image_ids):
        raise InputError(f"--run: {args.run} has no split.json (made before model.py wrote one), so its "
                         "held-out images are unknown: give --data and --image-ids")
    args.model = args.model or os.path.join(args.run, "best.keras")
    if not os.path.exists(args.model):
        raise InputError(f"--run: {args.model} not found (the run saved no checkpoint yet?)")
    if not args.data:
        args.data = (split or {}).get("val_data") or config.get("val_data") or config["data"]
        if split and split.get("held_out") and not args.image_ids:
            args.image_ids = [int(i) for i in split["val_image_ids"]]
    args.train_data = args.train_data or config.get("data")
    args.out = args.out or os.path.join(args.run, "eval")
    return split


def same_source(data, train_data):
    """True if two coco.npy files hold figures of the same photos: the same file, or files cut from the
    same annotation file (their sidecars say). Image ids are compared only then: other data sets
    (e.g. the synthetic splits) may reuse ids."""
    if os.path.samefile(data, train_data):
        return True
    try:
        sources = [read_sidecar(p).get("settings", {}).get("annotations") for p in (data, train_data)]
    except (ValueError, OSError, AttributeError):
        return False
    return sources[0] is not None and os.path.abspath(str(sources[0])) == os.path.abspath(str(sources[1]))


def training_figures(args, image_ids, notes):
    """How many evaluated figures (of image_ids) show images the model trained on: those of
    --train-data (or, with --run, the run's training images); a one-line warning if any."""
    split = getattr(args, "run_split", None)
    if not args.train_data or not same_source(args.data, args.train_data):
        return None if not args.train_data else 0
    if split and os.path.abspath(args.train_data) == os.path.abspath(split.get("train_data", "")):
        trained = np.asarray(split.get("train_image_ids", []), dtype=np.int64)
    else:
        trained = np.asarray(load_figures_checked(args.train_data, "--train-data")["image_id"], dtype=np.int64)
    count = int(np.isin(np.asarray(image_ids, dtype=np.int64), trained).sum())
    if count:
        notes.append(f"{count} of the {len(image_ids)} evaluated figures are of training images (in --train-data "
                     f"{args.train_data}): their scores are not a held-out measurement")
        print(f"warning: {notes[-1]}", file=sys.stderr)
    return count


def run_evaluation(args, model=None, predict=None):
    """Evaluate the model (or the oracle) on --data; writes everything into --out; returns metrics."""
    figures = load_figures_checked(args.data)
    names = figure_joint_names(figures)
    index = select_figures(figures, args.limit, args.image_ids)
    meta = figure_meta(figures, index)
    split = args.split or infer_split(args.data)
    notes = []
    if model is not None:
        out_shape = tuple(model.outputs[0].shape)
        if out_shape[-1] != len(names):
            raise InputError(f"--model {args.model} predicts {out_shape[-1]} joints but --data {args.data} "
                             f"has {len(names)}")
    if args.coco_root:
        annotations = load_annotations(args.coco_root, split)
        gt_dataset = gt_dataset_from_annotations(annotations, meta["annotation_id"], names)
        gt_source = annotation_path(args.coco_root, split)
    else:
        gt_dataset = gt_dataset_from_figures(meta["image_id"], meta["annotation_id"], meta["bbox"],
                                             gt_original(meta["keypoints"], meta["affine"]), names)
        gt_source = "figures (no --coco-root)"
        notes.append("no --coco-root: AP/AR use ground truth rebuilt from the figures with area = bbox w*h "
                     "instead of the segmentation area, so they are approximate (optimistic)")
    train_kp, label = baseline_keypoints(args, meta, len(names), notes)   # checked before any work
    trained = training_figures(args, meta["image_id"], notes)
    make_out_dir(args.out)
    started = time.time()
    preds, shown = predict_all(figures, index, args, names, model, predict)
    seconds = time.time() - started
    chosen = variants(args)[0]
    pred = preds[chosen]
    metrics, results, per_figure = score_predictions(pred, meta, names, gt_dataset)
    size = meta["canvas_size"]
    outside = ((meta["keypoints"][..., :2] < -0.5) | (meta["keypoints"][..., :2] > size - 0.5)).any(-1) \
        & (meta["keypoints"][..., 2] > 0)
    metrics = {"source": "oracle (stored ground-truth maps)" if model is None else args.model,
               "data": args.data, "split": split, "gt": gt_source, "decoding": variant_name(*chosen),
               "joints": list(names), "figures": int(len(index)),
               "persons": int(len(np.unique(meta["annotation_id"]))),
               "images": int(len(np.unique(meta["image_id"]))),
               "labelled_joints": int((meta["keypoints"][..., 2] > 0).sum()),
               "labelled_joints_outside_canvas": int(outside.sum()), "training_figures": trained,
               "seconds_predict_decode": round(seconds, 2), **metrics}
    pose = mean_pose(train_kp)
    base, _, _ = score_predictions(baseline_predictions(pose, len(index)), meta, names, gt_dataset)
    metrics["baseline"] = {"label": label, **base}
    if len(preds) > 1:
        metrics["decoding_comparison"] = {}
        for v, p in preds.items():
            m, _, _ = score_predictions(p, meta, names, gt_dataset)
            metrics["decoding_comparison"][variant_name(*v)] = {
                k: m[k] for k in ("pck@0.05", "pck@0.1", "pck@0.2", "mean_error_px", "median_error_px",
                                  "oks_mean", "ap", "ap50", "ap75", "ar") if k in m}
    metrics["notes"] = notes
    # files, each written atomically; metrics.json last, so it exists only for a finished run
    write_json(os.path.join(args.out, f"keypoints_{split}_results.json"), results, indent=None)
    if args.pictures > 0:
        labelled = np.isfinite(per_figure)
        order = np.argsort(np.where(labelled, -per_figure, np.inf))[:args.pictures]
        worst = maps_for(figures, index[order], args, names, model, predict)
        write_pictures(args.out, figures, index, pred, per_figure, shown, worst, names)
    plot_pck_per_joint(os.path.join(args.out, "pck_per_joint.png"), metrics["pck_per_joint"], names,
                       metrics["baseline"]["pck_per_joint"], title=f"{metrics['source']} on {args.data}")
    write_json(os.path.join(args.out, "metrics.json"), metrics)
    return metrics


# ----------------------------------------------------------------------------- inference on images

def parse_bbox(text):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not np.all(np.isfinite(values)) or values[2] <= 0 or values[3] <= 0:
        raise argparse.ArgumentTypeError(f"must be x,y,w,h (finite numbers, w, h > 0), not {text!r}")
    return values


def parse_ids(text):
    try:
        ids = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        ids = []
    if not ids:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers (at least one), not {text!r}")
    return ids


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


def run_inference(args, model, predict, boxes=None):
    """Predict the joints of the figure(s) in each image; writes predictions.json and overlays.

    boxes: load_box_annotations(args.annotations), or None (then it is loaded here if given).
    """
    files = list_images(args.images)
    if boxes is None and args.annotations:
        boxes = load_box_annotations(args.annotations)
    n_joints = int(model.outputs[0].shape[-1])
    names = joint_names(n_joints)
    size = int(model.inputs[0].shape[1])
    perm = flip_permutation(list(names))
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
        canvases, affines = zip(*(render_figure(image, mask, bb, size) for bb, mask, _ in crops))
        maps = model_maps(model, predict, np.stack(canvases), args.flip_test, perm, args.batch_size)
        kp = decode(maps, size, size, args.refine)
        xy = to_original(kp, np.stack(affines))
        overlay, figures_out = draw_figures(image, crops, xy, kp[..., 2], names, args.min_confidence)
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = f"{stem}_pose.png", 1
        while name in used:
            n += 1
            name = f"{stem}_{n}_pose.png"
        used.add(name)
        make_out_dir(args.out)                  # only now: a run that predicts nothing leaves no folder
        write_png(os.path.join(args.out, name), overlay)
        entries.append({"file": path, "width": image.shape[1], "height": image.shape[0],
                        "overlay": name, "figures": figures_out})
    bar.close()
    summary = {"model": args.model, "joint_names": list(names), "coordinates": "original image pixels, x right, "
               "y down, integers at pixel centres; each joint [x, y, confidence]",
               "decoding": variant_name(args.refine, args.flip_test), "images": entries, "unreadable": unreadable,
               "skipped_figures": skipped}
    problems = [f"{p}: unreadable" for p in unreadable] + [f"{d['file']}: {d['reason']}" for d in skipped]
    if not entries:
        raise InputError(f"none of the {len(files)} images could be read and cropped ({'; '.join(problems[:3])}"
                         f"{'; ...' if len(problems) > 3 else ''})")
    write_json(os.path.join(args.out, "predictions.json"), summary)
    for problem in problems:
        print(f"evaluate.py: skipped {problem}", file=sys.stderr)
    whole = sum(f["crop"] == "whole image" for e in entries for f in e["figures"])
    print(f"images: {len(entries)} predicted, {len(unreadable)} unreadable (skipped), {len(skipped)} figures "
          f"skipped (named in predictions.json skipped_figures)"
          + (f", {whole} without a box in --annotations (whole image used)" if boxes is not None and whole else "")
          + f"; wrote {os.path.join(args.out, 'predictions.json')} and {len(entries)} overlays")
    unmasked = sum(not f["masked"] for e in entries for f in e["figures"])
    if unmasked:
        print(f"note: figures without a person mask: {unmasked}; they keep the photo's background inside the box, "
              f"while every training figure is on white; {UNMASKED_COST}")
    return summary


# ----------------------------------------------------------------------------- export

def export_model(model, kind, out_dir):
    """Write a deployable copy of the model's main output: model.tflite or saved_model/.

    Input: float32 (1, S, S, 3) = model.preprocess_images(RGB uint8 canvas) in [-1, 1];
    output: float32 (1, M, M, J) in tanh range [-1, 1] (maps = (out + 1) / 2). export.json
    beside it records S, M, the joint names and the decoding settings.

    Atomic: the export is written to `<path>.partial` and renamed at the end (export.json
    after it), so a killed export leaves nothing at `path` that loads as an export; the
    `.partial` of a killed run is removed by the next one.
    """
    import tempfile

    import keras
    import tensorflow as tf
    make_out_dir(out_dir)
    main = keras.Model(model.inputs[0], model.outputs[0], name="figure_pose_export")
    size = int(model.inputs[0].shape[1])
    m = int(model.outputs[0].shape[1])
    n_joints = int(model.outputs[0].shape[-1])
    path = os.path.join(out_dir, "saved_model" if kind == "saved_model" else "model.tflite")
    partial = path + ".partial"
    try:
        remove_path(partial)
        if kind == "saved_model":
            with contextlib.redirect_stdout(io.StringIO()):
                main.export(partial, format="tf_saved_model", verbose=False,
                            input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="figure")])
        else:
            with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
                main.export(tmp, format="tf_saved_model", verbose=False,
                            input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32, name="figure")])
                flat = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
            with open(partial, "wb") as f:
                f.write(flat)
        remove_path(os.path.join(out_dir, "export.json"))   # never beside another export than its own
        if os.path.isdir(path):                                # a folder cannot be renamed over a full one
            remove_path(path)
        os.replace(partial, path)
    except OSError as err:
        raise InputError(f"cannot write the export {path} ({err.strerror or err})") from None
    info = {"format": kind, "path": os.path.basename(path), "input_size": size, "map_size": m,
            "joint_names": list(joint_names(n_joints)), **codec_of_model(size, m).to_json(),
            "input": "float32 (1, S, S, 3) RGB canvas / 127.5 - 1 (model.preprocess_images)",
            "output": "float32 (1, M, M, J) tanh; maps = clip((out + 1) / 2, 0, 1); "
                      "decode with confidence_maps.ConfidenceMapCodec(stride, sigma_px).decode(maps)"}
    write_json(os.path.join(out_dir, "export.json"), info)
    return path


def remove_path(path):
    """Remove a file or folder if it is there (the leftover of a killed run)."""
    import shutil
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def exported_predictor(path):
    """A predict(model, canvases, batch_size) for an exported model (the model argument is ignored).

    Same contract as model.predict_maps: uint8 canvases -> maps (N, M, M, J) in [0, 1]
    (inference.ExportedModel, which reads export.json beside the model).
    """
    exported = load_exported(path)
    return lambda _model, canvases, batch_size=16: exported.maps(canvases, batch_size)


# ----------------------------------------------------------------------------- command line

def import_network():
    """network.py, the backend started first without its start-up chatter (backend.start_keras):
    only when a .keras model is needed, so other mistakes fail fast without TensorFlow."""
    import backend
    backend.start_keras()
    import network
    return network


def load_model_checked(path):
    """(model, predict): a .keras file with model.predict_maps, or an export (.tflite, SavedModel
    folder, or the folder evaluate.py --export wrote) with inference.predict_exported; one-line
    InputError for anything not ours."""
    if not os.path.exists(path):
        raise InputError(f"model file not found: {path}")
    if is_exported(path):
        try:
            model, predict = load_exported(path), predict_exported
        except ExportError as err:
            raise InputError(f"--model {err}") from None
    else:
        network = import_network()
        try:
            model, predict = network.load_trained_model(path), network.predict_maps
        except (ValueError, OSError) as err:
            raise InputError(str(err)) from None
    n_joints = int(model.outputs[0].shape[-1])
    if n_joints not in JOINT_SETS:
        raise InputError(f"--model {path} predicts {n_joints} joints; figure-pose models predict "
                         f"{' or '.join(map(str, sorted(JOINT_SETS)))}")
    return model, predict


def build_parser():
    parser = OneLineParser(
        prog="evaluate.py",
        description="Evaluate a figure-pose model (or, with --oracle, the stored ground-truth maps) on a "
                    "coco.npy: PCK, errors in original pixels, COCO keypoint AP/AR (pycocotools), the "
                    "mean-pose baseline and pictures; or predict joints on new images (--images); or "
                    "export the model (--export).",
        formatter_class=HelpFormatter)
    what = parser.add_argument_group("what to run")
    what.add_argument("--model", help="trained model: a .keras file written by model.py, or an export of one "
                                       "(model.tflite or saved_model/ with the export.json beside it, or the "
                                       "--export folder itself)")
    what.add_argument("--oracle", action="store_true",
                      help="evaluate the ground-truth maps stored in --data instead of a model (no --model): "
                           "checks geometry, rendering, decoding and the inverse transform")
    what.add_argument("--data", help="figures to evaluate (coco.npy from coco_process.py, e.g. coco_val.npy)")
    what.add_argument("--images", nargs="+", metavar="PATH",
                      help="predict on these image files or folders (not recursive) instead of evaluating: one "
                           "figure per image, or one per box of --annotations")
    what.add_argument("--export", choices=("tflite", "saved_model"),
                      help="write a deployable copy of --model into --out instead of evaluating")
    what.add_argument("--run", metavar="runs/NAME",
                      help="evaluate a model.py run folder: its best.keras on its validation figures (the "
                           "held-out images of --data when it trained without --val-data, from split.json), "
                           "its training data for the baseline, into runs/NAME/eval; flags given as well win")
    what.add_argument("--out", help="output folder (created if missing; required, except with --run: "
                                    "runs/NAME/eval)")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--coco-root", help="COCO folder with annotations/person_keypoints_<split>.json, for AP/AR "
                                        "against the original annotations (without it: AP/AR approximate, "
                                        "from the figures with bbox area)")
    ev.add_argument("--split", type=split_name,
                    help="COCO split of --data, e.g. val2017 (default: from the coco.npy sidecar, else val2017)")
    ev.add_argument("--train-data", help="training coco.npy, for the mean-pose baseline (default: the "
                                         "evaluated figures themselves, labelled so)")
    ev.add_argument("--limit", type=int_in(1), metavar="N",
                    help="evaluate only the first N selected figures (N >= 1)")
    ev.add_argument("--image-ids", type=parse_ids, metavar="A,B,C",
                    help="evaluate only figures of these COCO image ids (at least one)")
    ev.add_argument("--compare-decoding", action="store_true",
                    help="also score every --refine with and without --flip-test (metrics.json "
                         "decoding_comparison)")
    ev.add_argument("--pictures", type=int_in(0), default=8, metavar="N",
                    help="figures in examples.png (the first ones) and in worst.png (largest error); "
                         "N >= 0, 0: none")
    dec = parser.add_argument_group("decoding (evaluation and --images)")
    dec.add_argument("--refine", choices=REFINES, default="dark",
                     help="sub-pixel refinement of the map peak: dark (Taylor step on the smoothed log map), "
                          "quarter (1/4 px towards the higher neighbour) or none (integer argmax)")
    dec.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                     help="average the maps of each figure and of its mirror image (un-flipped, left/right "
                          "swapped); on by default (it raises AP on the sample model: README, section 4)")
    dec.add_argument("--batch-size", type=int_in(1), default=16, metavar="N",
                     help="figures per model call (N >= 1)")
    inf = parser.add_argument_group("inference on images (--images)")
    inf.add_argument("--bbox", type=parse_bbox, metavar="X,Y,W,H",
                     help="the figure's box in every image (original pixels; w, h > 0; images it does not "
                          "overlap are skipped); default: the whole image is the figure")
    inf.add_argument("--annotations", metavar="FILE",
                     help="the figures' boxes per image file name: COCO-format JSON (bbox, optional "
                          "segmentation mask), a CSV of file,x,y,w,h rows (header optional) or a JSON list of "
                          "{file, x, y, w, h}; several boxes per file: several figures; images without one use "
                          "the whole image")
    inf.add_argument("--min-confidence", type=number(0, 1), default=0.2, metavar="C",
                     help="joints below this confidence (0 <= C <= 1) are not drawn on the overlays (all are "
                          "written). A confidence is the joint's map peak: about 1 for a clear joint, near 0 "
                          "where the model sees none; not a calibrated probability")
    inf.add_argument("--overwrite", action="store_true",
                     help="replace the predictions.json (and overlays of the same names) of an earlier run in "
                          "--out; without it such an --out is refused")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def check_args(parser, args):
    if not args.out:
        parser.error("give --out (the output folder)")
    if args.images and args.export:
        parser.error("choose one of --images and --export")
    if args.oracle and args.model:
        parser.error("--oracle evaluates the stored maps: give no --model")
    if (args.images or args.export) and not args.model:
        parser.error("--images and --export need --model")
    if not args.images and not args.export:
        if not args.data:
            parser.error("give --data to evaluate (or --images / --export)")
        if not args.model and not args.oracle:
            parser.error("give --model or --oracle")
    if args.bbox and args.annotations:
        parser.error("give --bbox or --annotations, not both")
    evaluation_only = [flag for flag, value in (
        ("--data", args.data), ("--coco-root", args.coco_root), ("--split", args.split),
        ("--train-data", args.train_data), ("--limit", args.limit), ("--image-ids", args.image_ids),
        ("--compare-decoding", args.compare_decoding)) if value]
    if (args.images or args.export) and evaluation_only:
        parser.error(f"{', '.join(evaluation_only)}: only for evaluation, not with --images or --export")
    if args.overwrite and not args.images:
        parser.error("--overwrite is for --images (predictions.json)")
    if (args.bbox or args.annotations) and not args.images:
        parser.error("--bbox and --annotations crop the --images: give --images")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.run and (args.images or args.export or args.oracle):
        parser.error("--run evaluates a run folder: not with --images, --export or --oracle")
    try:
        run_split = apply_run(args) if args.run else None
    except InputError as err:
        sys.exit(f"evaluate.py: error: {err}")
    check_args(parser, args)
    args.run_split = run_split
    try:
        check_out_dir(args.out)
        boxes = None
        if args.images:             # cheap checks first: fail before loading TensorFlow
            earlier = os.path.join(args.out, "predictions.json")
            if os.path.exists(earlier) and not args.overwrite:
                raise InputError(f"--out {args.out} holds the predictions.json of an earlier run: give a new "
                                 "--out, or --overwrite to replace it")
            list_images(args.images)
            boxes = load_box_annotations(args.annotations) if args.annotations else None
        elif not args.export:
            load_figures_checked(args.data)
            if args.train_data:
                load_figures_checked(args.train_data, "--train-data")
        model, predict = load_model_checked(args.model) if args.model else (None, None)
        if args.export:
            if getattr(model, "format", None):
                raise InputError(f"--model {args.model} is an export already: --export copies a .keras model")
            path = export_model(model, args.export, args.out)
            print(f"exported {args.model} -> {path}")
        elif args.images:
            run_inference(args, model, predict, boxes)
        else:
            metrics = run_evaluation(args, model, predict)
            print_table(metrics)
            print(f"wrote {args.out}/metrics.json, keypoints_{metrics['split']}_results.json and pictures")
    except InputError as err:
        sys.exit(f"evaluate.py: error: {err}")
    except KeyboardInterrupt:
        sys.exit("evaluate.py: interrupted")


if __name__ == "__main__":
    main()
