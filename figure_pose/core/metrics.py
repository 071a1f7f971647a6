"""Keypoint accuracy: PCK, the kinds of its misses and the mean-pose baseline, shared by training and evaluation.

PCK@t is the fraction of labelled joints (visibility > 0) whose predicted position lies
within t * max(bbox w, h) of the label. Every figure's bbox has the same size on the
canvas (`figure_norm_size`), so PCK computed in canvas pixels equals PCK in original
pixels: the figure transform is one uniform scale plus a shift.
"""
import numpy as np

from figure_pose.core.figures import FRAME_RATIO


def figure_norm_size(canvas_size, frame_ratio=FRAME_RATIO):
    """max(bbox w, h) of every figure, in canvas pixels (228.6 px at 320)."""
    return canvas_size / (1.0 + 2.0 * frame_ratio)


def joint_errors(pred_xy, gt_keypoints):
    """Euclidean errors (N, J) between predictions (N, J, 2) and labels (N, J, 3); NaN where unlabelled."""
    pred_xy = np.asarray(pred_xy, dtype=np.float64)[..., :2]
    gt = np.asarray(gt_keypoints, dtype=np.float64)
    errors = np.linalg.norm(pred_xy - gt[..., :2], axis=-1)
    return np.where(gt[..., 2] > 0, errors, np.nan)


def joint_hits(pred_xy, gt_keypoints, norm_size, threshold):
    """(hits, labelled), each (N, J) bool: a labelled joint is a hit when its prediction lies
    within threshold * norm_size of its label (norm_size: scalar or (N,), the coordinates' pixels)."""
    errors = joint_errors(pred_xy, gt_keypoints)
    norm = np.broadcast_to(np.asarray(norm_size, dtype=np.float64).reshape(-1, 1), errors.shape)
    labelled = ~np.isnan(errors)
    return labelled & (np.where(labelled, errors, np.inf) <= threshold * norm), labelled


def pck_per_joint(pred_xy, gt_keypoints, norm_size, threshold):
    """PCK@threshold of each joint (J,), over the figures where that joint is labelled.

    norm_size: scalar or (N,) normaliser in the same pixels as the coordinates.
    A joint never labelled gets NaN.
    """
    hits, labelled = joint_hits(pred_xy, gt_keypoints, norm_size, threshold)
    counts = labelled.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits.sum(axis=0) / counts, np.nan)


def pck(pred_xy, gt_keypoints, norm_size, threshold):
    """PCK@threshold over all labelled joints of all figures (a float in [0, 1])."""
    hits, labelled = joint_hits(pred_xy, gt_keypoints, norm_size, threshold)
    if not labelled.any():
        raise ValueError("no labelled joints to score")
    return float(hits.sum() / labelled.sum())


def miss_kinds(pred_xy, gt_keypoints, norm_size, threshold, flip_perm, on_white):
    """What the joints missed at PCK@threshold are, after the error taxonomy of Ronchi and
    Perona (ICCV 2017), as counts:

    missed: labelled joints farther than threshold * norm_size from their label;
    inversions: of those, the ones within it of the label of their mirror joint (flip_perm:
        left for right), a left/right swap;
    on_white: of those, the ones labelled where the canvas is white (on_white (N, J) bool),
        outside the cut-out figure: a joint the picture does not show;
    labels_on_white: all labelled joints on white, missed or not.
    """
    hits, labelled = joint_hits(pred_xy, gt_keypoints, norm_size, threshold)
    on_mirror, _ = joint_hits(pred_xy, np.asarray(gt_keypoints)[:, flip_perm], norm_size, threshold)
    missed, on_white = labelled & ~hits, labelled & np.asarray(on_white, bool)
    return {"missed": int(missed.sum()), "inversions": int((missed & on_mirror).sum()),
            "on_white": int((missed & on_white).sum()), "labels_on_white": int(on_white.sum())}


def mean_pose(keypoints):
    """Mean canvas position (J, 2) of each joint over the figures where it is labelled.

    The baseline every model must beat: predict this pose for every figure. A joint
    never labelled goes to the mean of the others.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    labelled = kp[..., 2] > 0
    counts = labelled.sum(axis=0)
    sums = (kp[..., :2] * labelled[..., None]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pose = sums / counts[:, None]
    fallback = np.nanmean(pose, axis=0) if np.isfinite(pose).any() else np.zeros(2)
    return np.where(np.isfinite(pose), pose, fallback)


def baseline_predictions(pose, n):
    """The mean pose (J, 2) as canvas predictions (n, J, 3) with confidence 1."""
    out = np.ones((n,) + pose.shape[:1] + (3,), dtype=np.float64)
    out[..., :2] = pose
    return out
