"""PCK and OKS on hand-made cases with known answers; the COCO AP path (coco_eval.py)."""
import numpy as np
import pytest

from figure_pose.core.figures import (COCO_OKS_SIGMAS, coco_indices, figure_transform, gt_original, joint_names,
                                      to_original)
from figure_pose.core.figures import flip_permutation
from figure_pose.core.metrics import (baseline_predictions, figure_norm_size, joint_errors, mean_pose, miss_kinds, pck,
                                      pck_per_joint)
from figure_pose.evaluation.coco_eval import (coco_keypoint_eval, coco_results, gt_dataset_from_figures, person_oks,
                                              results_17, select_joints)

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


def test_miss_kinds_counts_inversions_and_labels_on_white():
    """hand_case's misses at 0.2 are joints 7, 8 (0.30) of figure 0 and joint 3 (0.21) of figure 1.
    Put figure 0's left wrist (5) on its right wrist's label, and figure 1's right knee (10)
    on its left knee's: two more misses, both inversions; figure 1's left ankle (11) on the
    right ankle's label when that one is unlabelled is a miss, not an inversion."""
    pred, gt, _ = hand_case()
    perm = flip_permutation(list(NAMES))
    gt[0, 6, :2], gt[1, 9, :2] = gt[0, 5, :2] + [100.0, 0.0], gt[1, 10, :2] + [0.0, 100.0]   # 0.44 apart
    pred[0, 6], pred[1, 9] = gt[0, 6, :2], gt[1, 9, :2]         # still hits
    pred[0, 5] = gt[0, 6, :2] + [0.1 * NORM, 0.0]              # within 0.2 of the mirror label
    pred[1, 10] = gt[1, 9, :2]
    gt[1, 12, 2] = 0
    pred[1, 11] = gt[1, 12, :2]
    gt[1, 11, :2] = gt[1, 12, :2] + [0.5 * NORM, 0.0]
    on_white = np.zeros((2, 13), bool)
    on_white[0, 7] = on_white[0, 0] = on_white[1, 10] = True    # joint 0 of figure 0 is a hit: not a miss
    kinds = miss_kinds(pred, gt, NORM, 0.2, perm, on_white)
    assert kinds == {"missed": 6, "inversions": 2, "on_white": 2, "labels_on_white": 3}
    assert kinds["missed"] == round((1 - pck(pred, gt, NORM, 0.2)) * ((gt[..., 2] > 0).sum()))


def test_mean_pose_ignores_unlabelled():
    kp = np.array([[[10, 20, 2], [0, 0, 0]], [[30, 40, 1], [5, 7, 2]]], dtype=float)
    np.testing.assert_allclose(mean_pose(kp), [[20, 30], [5, 7]])
    predictions = baseline_predictions(mean_pose(kp), 3)
    assert predictions.shape == (3, 2, 3)
    np.testing.assert_allclose(predictions[2], [[20, 30, 1], [5, 7, 1]])


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
    # the person through coco_eval (in-memory GT of the 13 joints, area = bbox w * h = 10000)
    bbox = np.array([[90.0, 40.0, 100.0, 100.0]])
    dataset = gt_dataset_from_figures([7], [70], bbox, gt[None], NAMES)
    assert dataset["annotations"][0]["num_keypoints"] == 2
    results = coco_results([7], [70], pred[None], np.ones((1, 13)), NAMES)
    stats, evaluator = coco_keypoint_eval(dataset, results, NAMES)
    assert person_oks(evaluator) == {70: pytest.approx(expected, rel=1e-9)}
    # OKS 0.948 matches at the thresholds 0.50 ... 0.90 but not 0.95: AP = 9 / 10
    assert stats["ap"] == pytest.approx(0.9)
    assert stats["ap50"] == pytest.approx(1.0) and stats["ap75"] == pytest.approx(1.0)
    assert stats["ar"] == pytest.approx(0.9)


def oks_by_hand(pred_xy, gt, area):
    """The COCO formula, written out: mean over labelled joints of exp(-d^2 / (2 * area * (2 sigma)^2))."""
    sigmas = np.array([COCO_OKS_SIGMAS[n] for n in NAMES])
    d2 = ((pred_xy - gt[:, :2]) ** 2).sum(-1)
    labelled = gt[:, 2] > 0
    return float(np.mean(np.exp(-d2 / (2 * area * (2 * sigmas) ** 2))[labelled]))


def crowded_image(n, seed=0):
    """n persons in one image (ids 100 + k, bbox areas differ), each predicted a few px off its own
    joints; prediction scores rise with k, so COCOeval's rows (by score) run against its columns."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((n, 13, 3))
    gt[..., :2] = rng.uniform(0, 60, (n, 13, 2)) + 80 * np.arange(n)[:, None, None]   # far apart
    gt[..., 2] = rng.choice([0, 1, 2], (n, 13), p=[0.2, 0.3, 0.5])
    gt[:, 0, 2] = 2                                                                      # >= 1 labelled
    pred = gt[..., :2] + rng.normal(0, 1 + np.arange(n)[:, None, None], (n, 13, 2))
    bboxes = np.array([[80.0 * k, 0.0, 60.0 + 10 * k, 60.0] for k in range(n)])
    conf = np.linspace(0.1, 0.9, n)[:, None] * np.ones((1, 13))
    return gt, pred, bboxes, conf


@pytest.mark.parametrize("n", [3, 23])           # 23: more persons than COCOeval's maxDets (20) in one image
def test_person_oks_is_each_figure_against_its_own_annotation(n):
    gt, pred, bboxes, conf = crowded_image(n)
    ids = 100 + np.arange(n)
    dataset = gt_dataset_from_figures([5] * n, ids, bboxes, gt, NAMES)
    results = coco_results([5] * n, ids, pred, conf, NAMES)
    _, evaluator = coco_keypoint_eval(dataset, results, NAMES)
    oks = person_oks(evaluator)
    written = [np.asarray(r["keypoints"]).reshape(17, 3)[coco_indices(NAMES), :2] for r in results]  # as scored
    expected = {int(i): oks_by_hand(xy, g, b[2] * b[3]) for i, xy, g, b in zip(ids, written, gt, bboxes)}
    assert sorted(oks) == sorted(expected)
    for i in expected:
        assert oks[i] == pytest.approx(expected[i], rel=1e-9), i
    assert len(set(np.round(list(oks.values()), 6))) == n          # distinct values: a swap would show
    assert min(oks.values()) < 0.9 < max(oks.values())


def test_person_oks_is_nan_without_labelled_joints():
    gt, pred, bboxes, conf = crowded_image(2)
    gt[1, :, 2] = 0
    dataset = gt_dataset_from_figures([5, 5], [1, 2], bboxes, gt, NAMES)
    _, evaluator = coco_keypoint_eval(dataset, coco_results([5, 5], [1, 2], pred, conf, NAMES), NAMES)
    oks = person_oks(evaluator)
    assert oks[1] > 0.5 and np.isnan(oks[2])


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
    labels = np.concatenate([canvas, np.ones((2, 13, 1))], -1)
    labels[0, 3, 2] = 0                                             # unlabelled: stays 0, 0, 0
    back = gt_original(labels, affines)
    np.testing.assert_allclose(back[0, 3], [0, 0, 0])
    np.testing.assert_allclose(back[1, :, :2], orig[1], atol=1e-9)
