"""Evaluation of a model (or of the stored ground truth, the oracle) on a coco.npy: evaluate.py's work.

    metrics = run_evaluation(args, model, predict)     # writes metrics.json, results and pictures into args.out

The selected figures are predicted in chunks (inference.py), decoded on the figure canvas
for each decoding asked for, mapped back to the photo with the record's affine
(figures.to_original) and scored: PCK per threshold and joint, joint errors in original
pixels, COCO keypoint AP/AR and per-person OKS (coco_eval.py), the kinds of the misses at
PCK@0.2 (left/right inversions, labels outside the cut-out), and the mean-pose baseline.
A model.py run folder (--run) fills in the model, the held-out images and the training data.
"""
import json
import os
import sys
import time

import numpy as np

from figure_pose.core.atomic import write_json
from figure_pose.core.cli import InputError, os_errors_as_input, progress
from figure_pose.core.confidence_maps import flip_maps
from figure_pose.core.figures import (canvas_image, figure_joint_names, flip_permutation, gt_original, open_figures,
                                      read_sidecar, to_original, white_border)
from figure_pose.core.metrics import (baseline_predictions, figure_norm_size, joint_errors, mean_pose, miss_kinds, pck,
                                      pck_per_joint)
from figure_pose.core.pictures import plot_pck_per_joint, write_pictures
from figure_pose.data.coco_io import annotation_path
from figure_pose.evaluation.coco_eval import (coco_keypoint_eval, coco_results, gt_dataset_from_annotations,
                                              gt_dataset_from_figures, load_annotations, person_oks)
from figure_pose.evaluation.inference import REFINES, decode, model_maps, oracle_maps, variant_name

THRESHOLDS = (0.05, 0.1, 0.2)
MISS_THRESHOLD = 0.2  # the PCK threshold whose misses are sorted into kinds (metrics.miss_kinds)
CHUNK = 64  # figures decoded per step (bounded memory on any dataset size)
COMPARED = ("pck@0.05", "pck@0.1", "pck@0.2", "mean_error_px", "median_error_px", "oks_mean", "ap", "ap50",
            "ap75", "ar")  # the numbers of each decoding in metrics.json decoding_comparison


# ----------------------------------------------------------------------------- the figures

def load_figures_checked(path, flag="--data"):
    try:
        return open_figures(path)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise InputError(f"{flag} {err}") from None


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


def ground_truth(args, split, meta, names, notes):
    """(COCO ground truth of the evaluated persons, where it came from): the --coco-root annotations,
    or rebuilt from the figures (said in `notes`)."""
    if args.coco_root:
        gt_dataset = gt_dataset_from_annotations(load_annotations(args.coco_root, split), meta["annotation_id"], names)
        return gt_dataset, annotation_path(args.coco_root, split)
    notes.append("no --coco-root: AP/AR use ground truth rebuilt from the figures with area = bbox w*h "
                 "instead of the segmentation area, so they are approximate (optimistic)")
    gt_dataset = gt_dataset_from_figures(meta["image_id"], meta["annotation_id"], meta["bbox"],
                                         gt_original(meta["keypoints"], meta["affine"]), names)
    return gt_dataset, "figures (no --coco-root)"


def labels_on_white(figures, index, keypoints, radius=1):
    """(N, J) bool: the canvas is white (255) at each labelled joint of figures[index] and
    within `radius` px of it (keypoints (N, J, 3) canvas px): a label outside the cut-out
    figure, on a part of the person the mask left out. Crops are read in chunks."""
    size = int(figures["canvas_size"][index[0]])
    border = white_border(size)
    inner = size - 2 * border                                         # the stored crop's side
    offsets = np.arange(-radius, radius + 1)
    on_white = np.zeros(keypoints.shape[:2], bool)
    for start in range(0, len(index), CHUNK):
        crops = np.asarray(figures["figure"][index[start:start + CHUNK]])      # (n, C, C, 3)
        kp = keypoints[start:start + CHUNK]
        x = np.rint(kp[..., 0]).astype(int)[..., None, None] + offsets[None, :] - border   # (n, J, 1, k) crop px
        y = np.rint(kp[..., 1]).astype(int)[..., None, None] + offsets[:, None] - border   # (n, J, k, 1)
        outside = (x < 0) | (x >= inner) | (y < 0) | (y >= inner)                       # the white border
        n = np.arange(len(crops))[:, None, None, None]
        white = crops[n, np.clip(y, 0, inner - 1), np.clip(x, 0, inner - 1)].min(axis=-1) == 255   # (n, J, k, k)
        on_white[start:start + len(crops)] = (white | outside).all(axis=(-2, -1)) & (kp[..., 2] > 0)
    return on_white


# ----------------------------------------------------------------------------- predicting

def variants(args):
    """The decodings (refine, flip) to compute: the chosen one first, then the others if --compare-decoding."""
    chosen = (args.refine, args.flip_test)
    if not args.compare_decoding:
        return [chosen]
    return [chosen] + [(r, f) for f in (False, True) for r in REFINES if (r, f) != chosen]


def chunk_maps(records, flips, perm, args, model, predict):
    """{flip: maps (n, M, M, J)} of records for each flip in `flips`: the oracle's (model None) or
    the model's, the mirrored canvases predicted once for the flip test."""
    if model is None:
        return {f: oracle_maps(records, f, perm) for f in flips}
    canvases = np.stack([canvas_image(r) for r in records])
    plain = model_maps(model, predict, canvases, False, perm, args.batch_size)
    maps = {False: plain}
    if True in flips:
        mirrored = model_maps(model, predict, np.ascontiguousarray(canvases[:, :, ::-1]), False, perm,
                              args.batch_size)
        maps[True] = 0.5 * (plain + flip_maps(mirrored, perm))
    return maps


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
        maps = chunk_maps(figures[chunk], flips, perm, args, model, predict)
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


# ----------------------------------------------------------------------------- scoring

def pck_metrics(pred_canvas, gt_kp, size, names):
    """PCK at each threshold, overall and per joint (None where never labelled), on the canvas."""
    norm = figure_norm_size(size)
    metrics = {f"pck@{t}": pck(pred_canvas[..., :2], gt_kp, norm, t) for t in THRESHOLDS}
    metrics["pck_per_joint"] = {
        f"pck@{t}": {n: (None if np.isnan(v) else float(v))
                     for n, v in zip(names, pck_per_joint(pred_canvas[..., :2], gt_kp, norm, t))}
        for t in THRESHOLDS}
    return metrics


def score_predictions(pred_canvas, meta, names, gt_dataset=None):
    """All metrics of canvas predictions (N, J, 3: x, y, confidence) against the figures in meta.

    meta: dict of numpy arrays keypoints (N, J, 3 canvas), affine, bbox, image_id,
    annotation_id, canvas_size. gt_dataset: COCO ground truth for AP (None: no AP).
    Returns (metrics dict, COCO results list, per-figure mean normalised error (N,)).
    """
    metrics = pck_metrics(pred_canvas, meta["keypoints"], float(meta["canvas_size"]), names)
    pred_orig = to_original(pred_canvas, meta["affine"])
    errors = joint_errors(pred_orig, gt_original(meta["keypoints"], meta["affine"]))   # original px, NaN unlabelled
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
        oks = person_oks(evaluator)
        metrics["oks_mean"] = float(np.nanmean([oks.get(int(a), np.nan) for a in meta["annotation_id"]]))
    return metrics, results, per_figure


def compare_decodings(preds, meta, names, gt_dataset):
    """{decoding name: its COMPARED numbers} of every decoding computed."""
    comparison = {}
    for v, p in preds.items():
        m, _, _ = score_predictions(p, meta, names, gt_dataset)
        comparison[variant_name(*v)] = {k: m[k] for k in COMPARED if k in m}
    return comparison


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


def score_baseline(train_kp, label, meta, names, gt_dataset):
    """metrics.json's "baseline": the mean pose of train_kp predicted for every evaluated figure."""
    pose = mean_pose(train_kp)
    base, _, _ = score_predictions(baseline_predictions(pose, len(meta["keypoints"])), meta, names, gt_dataset)
    return {"label": label, **base}


# ----------------------------------------------------------------------------- run folders and held-out images

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


# ----------------------------------------------------------------------------- the run

def check_model_joints(args, model, names):
    if model is not None and int(model.outputs[0].shape[-1]) != len(names):
        raise InputError(f"--model {args.model} predicts {tuple(model.outputs[0].shape)[-1]} joints but --data "
                         f"{args.data} has {len(names)}")


def describe_run(args, model, split, gt_source, meta, names):
    """metrics.json's first keys: what was evaluated, on what, and the counts of figures and joints."""
    kp, size = meta["keypoints"], meta["canvas_size"]
    outside = ((kp[..., :2] < -0.5) | (kp[..., :2] > size - 0.5)).any(-1) & (kp[..., 2] > 0)
    return {"source": "oracle (stored ground-truth maps)" if model is None else args.model,
            "data": args.data, "split": split, "gt": gt_source, "decoding": variant_name(*variants(args)[0]),
            "joints": list(names), "figures": int(len(kp)),
            "persons": int(len(np.unique(meta["annotation_id"]))),
            "images": int(len(np.unique(meta["image_id"]))),
            "labelled_joints": int((kp[..., 2] > 0).sum()),
            "labelled_joints_outside_canvas": int(outside.sum())}


def write_evaluation_pictures(args, figures, index, pred, per_figure, shown, names, model, predict):
    """examples.png and worst.png (--pictures of each; none for 0)."""
    if args.pictures <= 0:
        return
    labelled = np.isfinite(per_figure)
    order = np.argsort(np.where(labelled, -per_figure, np.inf))[:args.pictures]
    worst = maps_for(figures, index[order], args, names, model, predict)
    try:
        write_pictures(args.out, figures, index, pred, per_figure, shown, worst, names)
    except OSError as err:                                  # the picture it could not write, not its .partial
        path = str(err.filename or args.out).removesuffix(".partial")
        raise InputError(f"cannot write {path} ({err.strerror or err})") from None


def run_evaluation(args, model=None, predict=None):
    """Evaluate the model (or the oracle) on --data; writes everything into --out; returns metrics."""
    figures = load_figures_checked(args.data)
    names = figure_joint_names(figures)
    index = select_figures(figures, args.limit, args.image_ids)
    meta = figure_meta(figures, index)
    split = args.split or infer_split(args.data)
    notes = []
    check_model_joints(args, model, names)
    gt_dataset, gt_source = ground_truth(args, split, meta, names, notes)
    train_kp, label = baseline_keypoints(args, meta, len(names), notes)   # checked before any work
    trained = training_figures(args, meta["image_id"], notes)
    with os_errors_as_input(f"create --out {args.out}"):
        os.makedirs(args.out, exist_ok=True)
    started = time.time()
    preds, shown = predict_all(figures, index, args, names, model, predict)
    seconds = time.time() - started
    pred = preds[variants(args)[0]]
    scores, results, per_figure = score_predictions(pred, meta, names, gt_dataset)
    metrics = {**describe_run(args, model, split, gt_source, meta, names), "training_figures": trained,
               "seconds_predict_decode": round(seconds, 2), **scores}
    metrics[f"misses@{MISS_THRESHOLD}"] = miss_kinds(
        pred[..., :2], meta["keypoints"], figure_norm_size(meta["canvas_size"]), MISS_THRESHOLD,
        flip_permutation(list(names)), labels_on_white(figures, index, meta["keypoints"]))
    metrics["baseline"] = score_baseline(train_kp, label, meta, names, gt_dataset)
    if len(preds) > 1:
        metrics["decoding_comparison"] = compare_decodings(preds, meta, names, gt_dataset)
    metrics["notes"] = notes
    # files, each written atomically; metrics.json last, so it exists only for a finished run
    results_path = os.path.join(args.out, f"keypoints_{split}_results.json")
    with os_errors_as_input(f"write {results_path}"):
        write_json(results_path, results, indent=None)
    write_evaluation_pictures(args, figures, index, pred, per_figure, shown, names, model, predict)
    plot_path = os.path.join(args.out, "pck_per_joint.png")
    with os_errors_as_input(f"write {plot_path}"):
        plot_pck_per_joint(plot_path, metrics["pck_per_joint"], names, metrics["baseline"]["pck_per_joint"],
                           title=f"{metrics['source']} on {args.data}")
    with os_errors_as_input(f"write {os.path.join(args.out, 'metrics.json')}"):
        write_json(os.path.join(args.out, "metrics.json"), metrics)
    return metrics


def describe_misses(misses, labelled_joints):
    """One line on the joints missed at PCK@MISS_THRESHOLD (metrics.miss_kinds' counts)."""
    return (f"missed at PCK@{MISS_THRESHOLD}: {misses['missed']} of {labelled_joints} labelled joints; of those "
            f"{misses['inversions']} left/right inversions (on the mirror joint's label), {misses['on_white']} of the "
            f"{misses['labels_on_white']} labelled on the white canvas (outside the cut-out)")


def print_table(metrics, file=None):
    """The main numbers (model, baseline and decoding comparison) as an aligned table on `file`
    (default: sys.stdout at the time of the call)."""
    file = file or sys.stdout
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
    if f"misses@{MISS_THRESHOLD}" in metrics:
        print(describe_misses(metrics[f"misses@{MISS_THRESHOLD}"], metrics["labelled_joints"]), file=file)
    for note in metrics.get("notes", []):
        print(f"note: {note}", file=file)
