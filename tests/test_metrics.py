"""PCK and OKS on hand-made cases with known answers; the COCO AP path of evaluate.py."""
import numpy as np
import pytest

from evaluate import (coco_keypoint_eval, coco_results, gt_dataset_from_figures, oks, results_17,
                      select_joints, to_original)
from figures import COCO_OKS_SIGMAS, figure_transform, joint_names
from metrics import figure_norm_size, joint_errors, mean_pose, pck, pck_per_joint

NAMES = joint_names(13)
NORM = figure_norm_size(320)            # 228.57 canvas px = max(bbox w, h)


def hand_case():
    """Two figures, 13 joints; errors as fractions of the bbox side (NaN = unlabelled)."""
    fractions = np.array([
        [0.00, 0.04, 0.04, 0.08, 0.08, 0.15, 0.15, 0.30, 0.30, 0.00, 0.00, 0.19, np.nan],
        [0.01, 0.06, 0.11, 0.21, np.nan, np.nan, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    ])
    rng = np.random.default_rng(0)
    gt = np.zeros((2, 13, 3))
    gt[..., :2] = rng.uniform(60, 260, (2, 13, 2))
    gt[..., 2] = np.where(np.isnan(fractions), 0, 2)
    angle = rng.uniform(0, 2 * np.pi, (2, 13))
    step = np.nan_to_num(fractions) * NORM
    pred = gt[..., :2] + np.stack([np.cos(angle), np.sin(angle)], -1) * step[..., None]
    return pred, gt, fractions


def test_pck_exact_values():
    pred, gt, fractions = hand_case()
    labelled = ~np.isnan(fractions)
    n = labelled.sum()                                          # 23 labelled joints
    assert n == 23
    # within 0.05: the 0, 0.01 and 0.04 errors (0.04 x2, 0.00 x3 + 0.01 + 0.00 x7)
    assert pck(pred, gt, NORM, 0.05) == pytest.approx(13 / 23)
    assert pck(pred, gt, NORM, 0.1) == pytest.approx(16 / 23)  # + 0.08 x2, 0.06
    assert pck(pred, gt, NORM, 0.2) == pytest.approx(20 / 23)  # + 0.15 x2, 0.19, 0.11
    expected = {t: np.nanmean(np.where(labelled, fractions <= t, np.nan), axis=0) for t in (0.05, 0.1, 0.2)}
    for t, values in expected.items():
        np.testing.assert_allclose(pck_per_joint(pred, gt, NORM, t), values)
    # per-figure normaliser: doubling figure 0's size halves its relative errors
    assert pck(pred, gt, [2 * NORM, NORM], 0.05) == pytest.approx(15 / 23)


def test_joint_errors_nan_where_unlabelled_and_pck_needs_labels():
    pred, gt, fractions = hand_case()
    errors = joint_errors(pred, gt)
    np.testing.assert_array_equal(np.isnan(errors), np.isnan(fractions))
    np.testing.assert_allclose(errors[~np.isnan(errors)], fractions[~np.isnan(fractions)] * NORM, atol=1e-9)
    with pytest.raises(ValueError):
        pck(pred, np.zeros_like(gt), NORM, 0.1)
    assert pck_per_joint(pred, gt, NORM, 0.1)[12] == 1.0        # labelled in one figure only, exact there
    assert np.isnan(pck_per_joint(pred[:1], gt[:1], NORM, 0.1)[12])  # never labelled: NaN


def test_mean_pose_ignores_unlabelled():
    kp = np.array([[[10, 20, 2], [0, 0, 0]], [[30, 40, 1], [5, 7, 2]]], dtype=float)
    np.testing.assert_allclose(mean_pose(kp), [[20, 30], [5, 7]])


def one_person(area=10000.0):
    """A person with two labelled joints (nose, left_hip); the prediction is exact on the nose
    and 10 px off on the left hip. By hand: OKS = (1 + exp(-100 / (2 * area * (2 * 0.107)^2))) / 2."""
    gt = np.zeros((13, 3))
    gt[0] = [100, 50, 2]
    gt[NAMES.index("left_hip")] = [120, 180, 1]
    pred = gt[:, :2].copy()
    pred[NAMES.index("left_hip")] += [6.0, 8.0]
    expected = (1.0 + np.exp(-100.0 / (2 * area * (2 * 0.107) ** 2))) / 2
    return pred, gt, expected


def test_oks_by_hand_and_coco_eval():
    pred, gt, expected = one_person()
    assert expected == pytest.approx(0.9482846, abs=1e-7)  # e = 100 / 915.92 = 0.10918
    sigmas = np.array([COCO_OKS_SIGMAS[n] for n in NAMES])
    assert oks(pred, gt, 10000.0, sigmas) == pytest.approx(expected, rel=1e-12)
    # the same person through evaluate.py's COCO code (in-memory GT of the 13 joints, area 10000)
    bbox = np.array([[90.0, 40.0, 100.0, 100.0]])
    dataset = gt_dataset_from_figures([7], [70], bbox, gt[None], NAMES)   # area = w * h = 10000
    assert dataset["annotations"][0]["num_keypoints"] == 2
    results = coco_results([7], [70], pred[None], np.ones((1, 13)), NAMES)
    stats, evaluator = coco_keypoint_eval(dataset, results, NAMES)
    assert evaluator.computeOks(7, 1)[0, 0] == pytest.approx(expected, rel=1e-9)
    # OKS 0.948 matches at the thresholds 0.50 ... 0.90 but not 0.95: AP = 9 / 10
    assert stats["ap"] == pytest.approx(0.9)
    assert stats["ap50"] == pytest.approx(1.0) and stats["ap75"] == pytest.approx(1.0)
    assert stats["ar"] == pytest.approx(0.9)


def test_results_format_round_trip():
    xy = np.arange(26, dtype=float).reshape(13, 2) + 0.25
    flat, conf = results_17(xy, np.full(13, 0.5), NAMES)
    assert len(flat) == 51 and len(conf) == 17
    kp = np.asarray(flat).reshape(17, 3)
    assert np.all(kp[1:5] == 0)                                     # eyes and ears: not predicted
    np.testing.assert_allclose(np.asarray(select_joints(flat, NAMES)).reshape(13, 3)[:, :2], xy, atol=1e-3)


def test_to_original_inverts_the_figure_transform():
    affines = np.stack([figure_transform((10, 20, 50, 120)), figure_transform((300, 5, 200, 90))])
    orig = np.random.default_rng(1).uniform(0, 400, (2, 13, 2))
    canvas = np.stack([orig[i] @ affines[i][:, :2].T + affines[i][:, 2] for i in range(2)])
    np.testing.assert_allclose(to_original(canvas, affines), orig, atol=1e-9)
