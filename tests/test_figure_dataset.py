"""figure_dataset.py: the host reads stored bytes, the device path matches the NumPy/OpenCV
reference, flips swap left/right, batches are reproducible and shardable."""
import cv2
import numpy as np
import pytest

from figure_pose.core.confidence_maps import ARCH_CODECS
from figure_pose.core.figures import canvas_image, flip_permutation, joint_names, mirror_x, rescale_pixel_coords
from figure_pose.data.figure_dataset import (N_PARAMS, NO_AUGMENT, Augment, DeviceAugment, FigureBatches, FigureFile,
                                             draw_augmentation, reference_augment, resize_keypoints, split_by_image)
from synthetic_coco import random_figures_file

SIZE = 96
NAMES = list(joint_names(13))
CODEC = ARCH_CODECS["simple"]


def write_figures(path, n=6, size=SIZE, seed=0):
    """A small coco.npy of random-noise figures with every joint labelled inside the canvas."""
    return random_figures_file(path, n=n, size=size, seed=seed)


def device(batches, batch):
    """DeviceAugment of a batch: (images uint8-range float (B, S, S, 3), keypoints (B, J, 3))."""
    images, keypoints = DeviceAugment(batches.size, batches.canvas_size, batches.flip_perm)(batch)
    return (np.asarray(images) + 1.0) * 127.5, np.asarray(keypoints)


def reference(batches, batch_index, batch):
    """The NumPy/OpenCV reference of the same batch: float images (B, S, S, 3), keypoints (B, J, 3)."""
    records = np.load(batches.path)
    out = [reference_augment(canvas_image(records[i]).astype(np.float32), records[i]["keypoints"],
                             params[:6], params[6] > 0.5, batches.flip_perm, batches.size)
           for i, params in zip(batches.global_positions(batch_index), batch["augment"])]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


@pytest.mark.parametrize("size", [64, 96, 128])
def test_device_path_matches_the_reference(tmp_path, size):
    """Keypoints within 1e-3 px of the reference; images within OpenCV's 1/32-px coordinate
    rounding (worst case on random noise: mean under 1 level of 255, every pixel under 8)."""
    path = write_figures(tmp_path / "coco.npy", n=8)
    batches = FigureBatches(path, batch_size=8, size=size, augment=Augment(flip=0.5, rotation=40), seed=3)
    batch = batches[0]
    assert 0 < batch["augment"][:, 6].sum() < 8  # both flipped and plain figures are checked
    images, keypoints = device(batches, batch)
    ref_images, ref_keypoints = reference(batches, 0, batch)
    np.testing.assert_allclose(keypoints, ref_keypoints, atol=1e-3)
    difference = np.abs(images - ref_images)
    assert difference.mean() < 1.0 and difference.max() < 8.0, (difference.mean(), difference.max())


def test_a_dot_lands_on_its_moved_keypoint(tmp_path):
    """Draw a dot at a keypoint on the stored crop; after the device warp its ink centroid is
    within 0.5 px of the moved keypoint, and the rendered map peaks there too."""
    path = write_figures(tmp_path / "coco.npy", n=4)
    records = np.load(path)
    records["figure"] = 255
    border = (SIZE - records["figure"].shape[1]) // 2
    rng = np.random.default_rng(1)
    for record in records:
        record["keypoints"][:, 2] = 0
        record["keypoints"][0] = (rng.integers(35, 60), rng.integers(35, 60), 2)
        x, y = (int(v) - border for v in record["keypoints"][0, :2])
        crop = np.ascontiguousarray(record["figure"])
        cv2.circle(crop, (x, y), 2, (0, 0, 0), -1)
        record["figure"] = crop
    np.save(path, records)
    batches = FigureBatches(path, batch_size=4, size=80, augment=Augment(flip=0.0, rotation=30))
    images, keypoints = device(batches, batches[0])
    ink = 255.0 - images[..., 0]
    ys, xs = np.mgrid[:80, :80]
    centres = np.stack([(ink * xs).sum((1, 2)), (ink * ys).sum((1, 2))], -1) / ink.sum((1, 2))[:, None]
    np.testing.assert_array_less(np.linalg.norm(centres - keypoints[:, 0, :2], axis=-1), 0.5)
    maps, _ = CODEC.encode(keypoints, 80)
    np.testing.assert_allclose(CODEC.decode(maps)[:, 0, :2], keypoints[:, 0, :2], atol=0.5)


def test_flip_swaps_left_and_right(tmp_path):
    """A flipped figure's left wrist sits (keypoint and map) on the mirrored right wrist."""
    path = write_figures(tmp_path / "coco.npy")
    flip_only = Augment(flip=1.0, rotation=0.0, scale_min=1.0, scale_max=1.0, shift=0.0)
    batches = FigureBatches(path, batch_size=6, augment=flip_only)
    batch = batches[0]
    _, keypoints = device(batches, batch)
    stored = batch["keypoints"]
    lw, rw = NAMES.index("left_wrist"), NAMES.index("right_wrist")
    expected = np.stack([mirror_x(stored[:, rw, 0], SIZE), stored[:, rw, 1]], axis=-1)
    np.testing.assert_allclose(keypoints[:, lw, :2], expected, atol=1e-3)
    maps, _ = CODEC.encode(keypoints, SIZE)
    np.testing.assert_allclose(CODEC.decode(maps)[:, lw, :2], expected, atol=0.5)
    assert list(flip_permutation(NAMES)[[lw, rw]]) == [rw, lw]


def test_reference_warp_keeps_a_dot_on_its_keypoint():
    """The OpenCV reference itself: a dot warped with a random affine lands on the moved keypoint."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        canvas = np.full((SIZE, SIZE, 3), 255, np.uint8)
        kp = np.zeros((13, 3), np.float32)
        kp[0] = (rng.integers(30, 66), rng.integers(30, 66), 2)
        cv2.circle(canvas, (int(kp[0, 0]), int(kp[0, 1])), 2, (0, 0, 0), -1)
        params = draw_augmentation(rng, 1, Augment(flip=0.5, rotation=30), SIZE, SIZE)[0]
        image, moved = reference_augment(canvas, kp, params[:6], params[6] > 0.5, np.arange(13), SIZE)
        ink = 255.0 - image[..., 0]
        ys, xs = np.mgrid[:SIZE, :SIZE]
        centre = np.array([(ink * xs).sum(), (ink * ys).sum()]) / ink.sum()
        assert np.linalg.norm(centre - moved[0, :2]) < 0.5


def test_colour_jitter_scales_channels(tmp_path):
    """Gains multiply each channel (contrast 1 here): device image = clip(reference * gain)."""
    path = write_figures(tmp_path / "coco.npy", n=2)
    batches = FigureBatches(path, batch_size=2, augment=NO_AUGMENT, shuffle=False)
    batch = batches[0]
    plain, _ = device(batches, batch)
    batch["augment"][:, 7:10] = [[0.5, 1.0, 1.5], [1.2, 0.8, 1.0]]
    jittered, _ = device(batches, batch)
    np.testing.assert_allclose(jittered, np.clip(plain * batch["augment"][:, None, None, 7:10], 0, 255), atol=1e-3)


def test_same_seed_same_batches(tmp_path):
    """Batches are a function of (seed, epoch, index): equal for equal seeds, new each epoch."""
    path = write_figures(tmp_path / "coco.npy")
    a = FigureBatches(path, batch_size=3, augment=Augment(), seed=5)
    b = FigureBatches(path, batch_size=3, augment=Augment(), seed=5)
    a.epoch = b.epoch = 2
    for key in ("figure", "keypoints", "augment"):
        np.testing.assert_array_equal(a[1][key], b[1][key])
    b.epoch = 3
    assert not np.array_equal(a[1]["augment"], b[1]["augment"])


def test_host_sends_only_stored_bytes(synthetic_figures):
    """A batch is uint8 crops, keypoints and N_PARAMS numbers per figure: 170 KB a figure at 320."""
    path = str(synthetic_figures)
    batch = FigureBatches(path, batch_size=4, size=128)[0]
    assert batch["figure"].dtype == np.uint8 and batch["figure"].shape == (4, 238, 238, 3)
    assert batch["keypoints"].shape == (4, 13, 3) and batch["augment"].shape == (4, N_PARAMS)
    per_figure = sum(v.nbytes for v in batch.values()) / 4
    assert per_figure == 238 * 238 * 3 + 13 * 3 * 4 + N_PARAMS * 4
    records = np.load(path, mmap_mode="r")
    positions = FigureBatches(path, batch_size=4).global_positions(0)
    np.testing.assert_array_equal(batch["figure"], records["figure"][positions])
    np.testing.assert_array_equal(batch["keypoints"], records["keypoints"][positions])


def test_small_fields_read_without_the_crops(synthetic_figures):
    """The head fields of the session's synthetic run (118 figures), read in chunks of 50, 50 and 18."""
    path = str(synthetic_figures)
    fields = FigureFile(path).small_fields(chunk=50)
    records = np.load(path, mmap_mode="r")
    assert len(fields) == 118
    assert "figure" not in fields.dtype.names and "confidence_maps" not in fields.dtype.names
    for name in fields.dtype.names:
        np.testing.assert_array_equal(fields[name], records[name])


def test_truncated_file_is_a_clear_error(tmp_path):
    path = write_figures(tmp_path / "coco.npy", n=4)
    with open(path, "r+b") as f:
        f.truncate(f.seek(0, 2) - 1000)
    with pytest.raises(ValueError, match="truncated"):
        FigureFile(path)


def test_validation_batches_only_resize(tmp_path):
    """Without shuffling: file order, the affine is the resize alone, keypoints rescaled."""
    path = write_figures(tmp_path / "coco.npy", n=5)
    records = np.load(path)
    records["keypoints"][:, 3] = 0  # joint 3 unlabelled everywhere
    np.save(path, records)
    batches = FigureBatches(path, batch_size=2, size=64, shuffle=False, augment=Augment())
    assert len(batches) == 3 and list(batches.global_positions(2)) == [4]
    _, keypoints = device(batches, batches[0])
    ratio = 64 / SIZE
    expected = rescale_pixel_coords(records["keypoints"][:2, 5, :2], ratio)
    np.testing.assert_allclose(keypoints[:, 5, :2], expected, atol=1e-3)
    assert (keypoints[:, 3] == 0).all()
    np.testing.assert_allclose(batches.input_keypoints()[:2], keypoints, atol=1e-3)


def test_resize_keypoints_round_trip():
    """Keypoints moved to another input side and back land where they were (within 1e-4 px);
    unlabelled ones stay (0, 0, 0)."""
    rng = np.random.default_rng(6)
    kp = np.concatenate([rng.uniform(0, SIZE, (5, 13, 2)), rng.integers(0, 3, (5, 13, 1))], -1).astype(np.float32)
    kp[kp[..., 2] == 0] = 0.0
    there = resize_keypoints(kp, 128 / SIZE)
    np.testing.assert_allclose(resize_keypoints(there, SIZE / 128), kp, atol=1e-4)
    assert (there[kp[..., 2] == 0] == 0).all() and (there[kp[..., 2] > 0, :2] != kp[kp[..., 2] > 0, :2]).all()


def test_split_by_image_never_shares_an_image():
    ids = np.repeat(np.arange(20), 3)
    train, val = split_by_image(ids, 0.2, seed=1)
    assert set(ids[train]).isdisjoint(ids[val]) and len(train) + len(val) == len(ids)
    assert len(set(ids[val])) == 4


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        FigureBatches(str(tmp_path / "nope.npy"))


def test_process_shards_split_every_global_batch(tmp_path):
    """Two processes' batches, side by side, are exactly the one-process batch (augmentation too)."""
    path = write_figures(tmp_path / "c.npy", n=10, size=64)
    common = dict(batch_size=4, augment=Augment(), seed=5, steps=3)
    whole = FigureBatches(path, **common)
    parts = [FigureBatches(path, shard=(i, 2), **common) for i in range(2)]
    for ds in (whole, *parts):
        ds.epoch = 2
    for step in range(3):
        one, halves = whole[step], [p[step] for p in parts]
        assert halves[0]["figure"].shape[0] == 2
        for key in one:
            np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), one[key])
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        FigureBatches(path, batch_size=4, shard=(0, 3))
