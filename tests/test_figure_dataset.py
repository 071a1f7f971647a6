"""figure_dataset.py: flips swap left/right, one affine moves image and keypoints, lazy reads."""
import cv2
import numpy as np
import pytest

from confidence_maps import decode_keypoints
from figure_dataset import (NO_AUGMENT, Augment, FigureDataset, random_affine, split_by_image,
                            warp_figure)
from figures import figure_dtype, flip_permutation, joint_names

SIZE = 96
NAMES = list(joint_names(13))


def write_figures(path, n=6, size=SIZE, seed=0):
    """A small coco.npy of random-ish figures with every joint labelled inside the canvas."""
    rng = np.random.default_rng(seed)
    records = np.zeros(n, dtype=figure_dtype(13, size))
    records["image_id"] = np.arange(n) // 2
    records["annotation_id"] = np.arange(n)
    records["canvas_size"] = size
    records["figure"] = rng.integers(0, 255, records["figure"].shape, dtype=np.uint8)
    kp = rng.uniform(size * 0.3, size * 0.7, (n, 13, 3)).astype(np.float32)
    kp[..., 2] = 2
    records["keypoints"] = kp
    np.save(path, records)
    return path


def test_flip_swaps_left_and_right(tmp_path):
    path = write_figures(tmp_path / "coco.npy")
    flip_only = Augment(flip=1.0, rotation=0.0, scale_min=1.0, scale_max=1.0, shift=0.0)
    ds = FigureDataset(str(path), batch_size=6, augment=flip_only, shuffle=False)
    plain = FigureDataset(str(path), batch_size=6, augment=NO_AUGMENT, shuffle=False)
    _, maps, kp = ds.load_batch(0)
    _, _, kp0 = plain.load_batch(0)
    lw, rw = NAMES.index("left_wrist"), NAMES.index("right_wrist")
    decoded = decode_keypoints(maps, stride=4)
    expected = np.stack([SIZE - 1 - kp0[:, rw, 0], kp0[:, rw, 1]], axis=-1)
    np.testing.assert_allclose(kp[:, lw, :2], expected, atol=1e-4)
    np.testing.assert_allclose(decoded[:, lw, :2], expected, atol=0.5)
    assert list(flip_permutation(NAMES)[[lw, rw]]) == [rw, lw]


def test_affine_keeps_keypoints_on_the_image():
    """Draw a dot at each keypoint, warp with a random affine: it lands on the moved keypoint."""
    rng = np.random.default_rng(3)
    perm = np.arange(13)  # identity: check geometry, not the swap
    for _ in range(5):
        canvas = np.full((SIZE, SIZE, 3), 255, np.uint8)
        kp = np.zeros((13, 3), np.float32)
        kp[0] = (rng.integers(30, 66), rng.integers(30, 66), 2)
        cv2.circle(canvas, (int(kp[0, 0]), int(kp[0, 1])), 2, (0, 0, 0), -1)
        affine, flipped = random_affine(rng, SIZE, Augment(flip=0.5, rotation=30))
        image, moved = warp_figure(canvas, kp, affine, flipped, perm)
        ink = 255.0 - image[..., 0]
        ys, xs = np.mgrid[:SIZE, :SIZE]
        centre = np.array([(ink * xs).sum(), (ink * ys).sum()]) / ink.sum()  # (x, y)
        assert np.linalg.norm(centre - moved[0, :2]) < 0.5


def test_deterministic_given_seed_and_epoch(tmp_path):
    path = write_figures(tmp_path / "coco.npy")
    a = FigureDataset(str(path), batch_size=3, augment=Augment(), seed=5)
    b = FigureDataset(str(path), batch_size=3, augment=Augment(), seed=5)
    a.epoch = b.epoch = 2
    np.testing.assert_array_equal(a[1][0], b[1][0])
    b.epoch = 3
    assert not np.array_equal(a[1][0], b[1][0])


def test_records_are_read_lazily(tmp_path):
    path = write_figures(tmp_path / "coco.npy", n=40)
    ds = FigureDataset(str(path), batch_size=4)
    assert isinstance(ds.figures, np.memmap) or isinstance(ds.figures.base, np.memmap)
    x, (target, *_) = ds[0]
    assert x.shape == (4, SIZE, SIZE, 3) and target.shape == (4, SIZE // 4, SIZE // 4, 26)
    assert x.dtype == np.float32 and -1.0 <= x.min() and x.max() <= 1.0


def test_resize_and_unlabelled_mask(tmp_path):
    path = write_figures(tmp_path / "coco.npy")
    records = np.load(path)
    records["keypoints"][:, 3] = 0  # joint 3 unlabelled everywhere
    np.save(path, records)
    ds = FigureDataset(str(path), batch_size=2, size=64, shuffle=False)
    _, (target, *_) = ds[0]
    assert target.shape == (2, 16, 16, 26)
    assert (target[..., 13 + 3] == 0).all() and (target[..., 3] == -1).all()
    assert (target[..., 13] == 1).all()


def test_split_by_image_never_shares_an_image():
    ids = np.repeat(np.arange(20), 3)
    train, val = split_by_image(ids, 0.2, seed=1)
    assert set(ids[train]).isdisjoint(ids[val]) and len(train) + len(val) == len(ids)
    assert len(set(ids[val])) == 4


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        FigureDataset(str(tmp_path / "nope.npy"))


def test_process_shards_split_every_global_batch(tmp_path):
    """Two processes' batches, side by side, are exactly the one-process batch (augmented too)."""
    path = write_figures(tmp_path / "c.npy", n=10, size=64)
    common = dict(batch_size=4, augment=Augment(), seed=5, steps=3)
    whole = FigureDataset(path, **common)
    parts = [FigureDataset(path, shard=(i, 2), **common) for i in range(2)]
    for ds in (whole, *parts):
        ds.epoch = 2
    for step in range(3):
        x, (y, *_) = whole[step]
        x0, (y0, *_) = parts[0][step]
        x1, (y1, *_) = parts[1][step]
        assert x0.shape[0] == 2
        np.testing.assert_array_equal(np.concatenate([x0, x1]), x)
        np.testing.assert_array_equal(np.concatenate([y0, y1]), y)
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        FigureDataset(path, batch_size=4, shard=(0, 3))
