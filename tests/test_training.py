"""training.py: the loss and its weights on hand-made numbers, the trainer, the schedule, colour
jitter on the device."""
import keras
import numpy as np
import pytest
from test_figure_dataset import write_figures

from figure_pose.core.confidence_maps import ARCH_CODECS
from figure_pose.core.figures import canvas_image
from figure_pose.data.figure_dataset import NO_AUGMENT, Augment, DeviceAugment, FigureBatches
from figure_pose.training.train_config import build_parser, config_from_args

import figure_pose.training.network as N
import figure_pose.training.training as T

SMALL = dict(n_joints=13, size=64, width=0.25)


# ----------------------------------------------------------------------------- the loss


def test_loss_counts_only_labelled_joints():
    pred = np.zeros((1, 2, 2, 2), np.float32)
    target = np.array([0.5, -1.0], np.float32) * np.ones((1, 2, 2, 2), np.float32)
    weights = np.array([[1.0, 0.0]], np.float32)
    loss = float(T.JointMSE()((target, weights), pred))
    assert loss == pytest.approx(0.25)  # joint 0: mean (0.5)^2; joint 1 unlabelled (would add 1)
    weights[:, 1] = 1.0
    assert float(T.JointMSE()((target, weights), pred)) == pytest.approx(1.25)


def test_foreground_weight_on_a_hand_made_target():
    """A pixel weighs 1 + 9 x (target + 1) / 2: 10 at a peak (tanh 1), 5.5 at tanh 0, 1 on background."""
    joint0 = [[1.0, -1.0], [-1.0, -1.0]]          # pred 0: squared errors 1 everywhere
    joint1 = [[0.0, -1.0], [-1.0, 1.0]]           # squared errors 0, 1, 1, 1
    target = np.stack([joint0, joint1], axis=-1)[None].astype(np.float32)    # (1, 2, 2, 2)
    pred = np.zeros_like(target)
    both, first = np.array([[1.0, 1.0]], np.float32), np.array([[1.0, 0.0]], np.float32)
    fg = T.make_loss("fg_mse")
    assert fg.foreground_weight == 9.0 and T.make_loss("mse").foreground_weight == 0.0
    assert float(fg((target, first), pred)) == pytest.approx((10 + 1 + 1 + 1) / 4)
    assert float(fg((target, both), pred)) == pytest.approx((10 + 1 + 1 + 1) / 4 + (5.5 * 0 + 1 + 1 + 10) / 4)
    assert float(T.JointMSE()((target, both), pred)) == pytest.approx(4 / 4 + 3 / 4)


def make_trainer(data, run_eagerly=False, **network):
    """A compiled FigureTrainer of a small network on 4-figure batches of `data`, and the batches.
    run_eagerly: for a step or two, where tracing the training graph would cost more than it saves."""
    batches = FigureBatches(data, batch_size=4, augment=NO_AUGMENT, shuffle=False)
    trainer = T.make_trainer(N.build_model("simple", **{**SMALL, **network}), batches, ARCH_CODECS["simple"])
    return T.compile_model(trainer, lr=2e-3, run_eagerly=run_eagerly), batches


def joint_mse_by_hand(target, weights, pred, foreground_weight):
    """JointMSE in NumPy: batch mean of sum_j weight_j x mean_yx (1 + fw (target + 1) / 2) (pred - target)^2."""
    pixel = 1.0 + foreground_weight * (target + 1.0) / 2.0
    per_joint = (pixel * (pred - target) ** 2).mean(axis=(1, 2))
    return float((per_joint * weights).sum(axis=-1).mean())


def test_trainer_loss_is_10_main_plus_5_each_side(tiny_data):
    """The trainer's loss against the three outputs' fg_mse computed in NumPy, every output
    against the one target rendered on the device from the moved keypoints."""
    trainer, batches = make_trainer(tiny_data)
    out = trainer(batches[0])
    target, weights = np.asarray(out["target"]), np.asarray(out["weights"])
    main, side1, side2 = (joint_mse_by_hand(target, weights, np.asarray(o), 9.0) for o in out["outputs"])
    assert len({round(v, 4) for v in (main, side1, side2)}) == 3          # the weights are told apart
    assert float(trainer.compute_loss(y_pred=out)) == pytest.approx(10 * main + 5 * side1 + 5 * side2, rel=1e-5)
    maps = ARCH_CODECS["simple"].encode(np.asarray(out["keypoints"]), 64)[0]
    np.testing.assert_allclose(target, maps * 2 - 1, atol=1e-5)


def test_loss_falls_on_a_tiny_set(tiny_data):
    keras.utils.set_random_seed(0)
    trainer, batches = make_trainer(tiny_data)
    losses = [trainer.train_on_batch(batches[0])[0] for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0]


def test_learning_rate_rule_and_schedule_in_optimiser_steps():
    """sqrt(batch) scaling from 5e-4 at batch 8; small sets get --min-steps; warm-up then cosine."""
    assert T.scaled_lr(8) == pytest.approx(5e-4) and T.scaled_lr(32) == pytest.approx(1e-3)
    assert T.scaled_lr(128) == pytest.approx(2e-3)
    assert T.epoch_steps(97, 8, 50, min_steps=2000) == 40           # 12 batches a pass, lengthened
    assert T.epoch_steps(150_000, 8, 50, min_steps=2000) == 18_750  # full COCO: one pass an epoch
    assert T.epoch_steps(97, 8, 50, min_steps=2000, steps=20) == 20  # --steps-per-epoch wins
    assert T.warmup_steps(2000) == 200 and T.warmup_steps(100_000) == 500
    lr = T.learning_rate(1e-3, 2000)
    at = [float(lr(step)) for step in (0, 100, 200, 1100, 2000)]
    assert at[0] == pytest.approx(1e-6) and at[1] == pytest.approx(5.005e-4, rel=1e-3)
    assert at[2] == pytest.approx(1e-3) and at[3] == pytest.approx(0.525e-3, rel=1e-3)  # half way down the cosine
    assert at[4] == pytest.approx(5e-5)
    assert T.learning_rate(1e-3, 2000, "constant") == 1e-3

# ----------------------------------------------------------------------------- augmentation


def test_color_jitter_changes_pixel_colours_only_when_on(tiny_data):
    """--color-jitter 0.5 on still geometry: each image's contrast about its mean and per-channel gains
    (the batch's augmentation numbers 7-10) change its colours, keypoints stay; 0 leaves the canvas as stored."""
    still = dict(flip=0.0, rotation=0.0, scale_min=1.0, scale_max=1.0, shift=0.0)

    def device_batch(jitter):
        batches = FigureBatches(tiny_data, batch_size=4, augment=Augment(**still, color_jitter=jitter), seed=2)
        batch = batches[0]
        images, keypoints = DeviceAugment(batches.size, batches.canvas_size, batches.flip_perm)(batch)
        return (np.asarray(images) + 1.0) * 127.5, np.asarray(keypoints), batch["augment"], batches
    plain, plain_keypoints, _, batches = device_batch(0.0)
    jittered, keypoints, params, _ = device_batch(0.5)
    records = np.load(tiny_data)
    canvases = np.stack([canvas_image(records[i]) for i in batches.global_positions(0)]).astype(np.float32)
    np.testing.assert_allclose(plain, canvases, atol=1e-3)
    gains, contrast = params[:, None, None, 7:10], params[:, 10, None, None, None]
    mean = canvases.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(jittered, np.clip(((canvases - mean) * contrast + mean) * gains, 0, 255), atol=0.05)
    assert np.abs(jittered - plain).mean() > 5 and not np.allclose(gains, 1.0)
    np.testing.assert_allclose(keypoints, plain_keypoints, atol=1e-4)
    args = build_parser("model.py", "").parse_args(["--color-jitter", "0.3"])
    assert config_from_args(args, terminal=False).augment.color_jitter == 0.3
