"""Training batches of figures from a memory-mapped `coco.npy`, with augmentation.

Every figure is read lazily from the memory map, so memory stays flat in the size of the
dataset. One random affine (flip, rotation, scale, shift; resize to the model's input
size folded in) moves the canvas and its keypoints together, and the confidence maps
are rendered *after* it from the moved keypoints, so they always agree with the image.
A horizontal flip also swaps left and right joints (`figures.flip_permutation`).

Randomness is a pure function of (seed, pass over the data, figure index), so a batch
is the same whichever worker makes it and a resumed run sees what an unbroken one saw.
"""
import copy
import math
from dataclasses import dataclass

import cv2
import keras
import numpy as np

from confidence_maps import SIGMA, render_confidence_maps
from figures import canvas_image, figure_joint_names, flip_permutation, open_figures


@dataclass(frozen=True)
class Augment:
    """Augmentation ranges. The defaults follow the usual top-down pose recipes."""
    flip: float = 0.5            # probability of a horizontal flip (with left/right swap)
    rotation: float = 30.0       # degrees, uniform in [-rotation, rotation]
    scale_min: float = 0.75      # zoom factor range
    scale_max: float = 1.25
    shift: float = 0.05          # fraction of the canvas side, uniform in [-shift, shift]
    color_jitter: float = 0.0    # brightness/contrast/colour gains in [1 - j, 1 + j]


NO_AUGMENT = Augment(flip=0.0, rotation=0.0, scale_min=1.0, scale_max=1.0, shift=0.0)


def split_by_image(image_ids, val_fraction=0.2, seed=0):
    """Indices (train, val) of figures so that no image has figures in both.

    image_ids: (N,) int array. A seeded `val_fraction` of the distinct images is held out.
    """
    unique = np.unique(image_ids)
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(len(unique) * val_fraction))) if len(unique) > 1 else 0
    val_images = rng.permutation(unique)[:n_val]
    is_val = np.isin(image_ids, val_images)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def random_affine(rng, size, augment):
    """A 2x3 affine of the size x size canvas and whether it flips, drawn from `augment`.

    Order (applied to points): flip about the centre, rotate and scale about the centre,
    shift. A canvas x goes to size - 1 - x under the flip (pixel-centre convention).
    """
    centre = (size - 1) / 2.0
    flipped = bool(rng.random() < augment.flip)
    angle = rng.uniform(-augment.rotation, augment.rotation)
    scale = rng.uniform(augment.scale_min, augment.scale_max)
    shift = rng.uniform(-augment.shift, augment.shift, size=2) * size
    rotate = np.vstack([cv2.getRotationMatrix2D((centre, centre), angle, scale), [0, 0, 1]])
    flip = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if flipped else np.eye(3)
    move = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]], [0.0, 0.0, 1.0]])
    return (move @ rotate @ flip)[:2], flipped


def warp_figure(canvas, keypoints, affine, flipped, flip_perm):
    """Apply one affine to a canvas (S, S, 3) uint8 and its keypoints (J, 3).

    Returns the warped canvas (white border) and keypoints (J, 3): moved, left/right
    swapped if `flipped`, and unlabelled (0, 0, 0) where they left the canvas.
    """
    size = canvas.shape[0]
    image = cv2.warpAffine(canvas, affine, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))
    kp = np.array(keypoints, dtype=np.float32)
    kp[:, :2] = kp[:, :2] @ affine[:, :2].T + affine[:, 2]
    if flipped:
        kp = kp[flip_perm]
    inside = (kp[:, :2] >= -0.5).all(axis=1) & (kp[:, :2] <= size - 0.5).all(axis=1)
    kp[~inside | (kp[:, 2] <= 0)] = 0.0
    return image, kp


def resize_figure(canvas, keypoints, size):
    """Resize a canvas (S0, S0, 3) and its keypoints (J, 3) to size x size (area filter)."""
    if canvas.shape[0] == size:
        return canvas, np.array(keypoints, dtype=np.float32)
    ratio = size / canvas.shape[0]
    image = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
    kp = np.array(keypoints, dtype=np.float32)
    kp[:, :2] = np.where(kp[:, 2:] > 0, (kp[:, :2] + 0.5) * ratio - 0.5, 0.0)
    return image, kp


def color_jitter(rng, image, amount):
    """Random brightness, contrast and per-channel gain of an (S, S, 3) uint8 image."""
    gains = rng.uniform(1 - amount, 1 + amount, size=3) * rng.uniform(1 - amount, 1 + amount)
    contrast = rng.uniform(1 - amount, 1 + amount)
    image = image.astype(np.float32)
    mean = image.mean()
    image = (image - mean) * contrast + mean
    return np.clip(image * gains, 0, 255).astype(np.uint8)


def preprocess(images_uint8):
    """uint8 (..., S, S, 3) RGB -> float32 in [-1, 1] (the network's input range)."""
    return np.asarray(images_uint8, dtype=np.float32) / 127.5 - 1.0


class FigureDataset(keras.utils.PyDataset):
    """Batches (images, targets) of figures for `model.fit`.

    images: float32 (B, S, S, 3) in [-1, 1]. targets: a tuple of `n_outputs` copies of a
    float32 (B, M, M, 2J) array: the J confidence maps scaled to [-1, 1] (tanh range)
    followed by J channels of the labelled mask (1 where the joint has visibility > 0).
    M = S / stride. One epoch is `steps` batches (default: one pass); batches run on
    through successive shuffled passes, so --steps-per-epoch never repeats a figure early.

    shard = (process, processes): in multi-process training every process serves its own
    contiguous part (B / processes figures) of the same global batch of B figures.
    """

    def __init__(self, path, indices=None, batch_size=8, size=None, stride=4, sigma=SIGMA,
                 augment=NO_AUGMENT, seed=0, shuffle=True, steps=None, n_outputs=3,
                 drop_remainder=None, shard=(0, 1), **kwargs):
        super().__init__(**kwargs)
        self.path = path
        self.figures = open_figures(path)  # a read-only memmap: nothing is read here
        self.indices = np.arange(len(self.figures)) if indices is None else np.asarray(indices)
        if len(self.indices) == 0:
            raise ValueError(f"{path}: no figures to make batches from")
        self.canvas_size = int(self.figures[0]["canvas_size"])
        self.size = size or self.canvas_size
        self.batch_size, self.stride, self.sigma = batch_size, stride, sigma
        self.augment, self.seed, self.shuffle = augment, seed, shuffle
        self.n_outputs = n_outputs
        self.drop_remainder = shuffle if drop_remainder is None else drop_remainder
        passes = len(self.indices) // batch_size if self.drop_remainder else len(self.indices) / batch_size
        self.steps = steps or max(1, math.ceil(passes))
        self.flip_perm = flip_permutation(list(figure_joint_names(self.figures)))
        self.n_joints = len(self.flip_perm)
        self.epoch = 0  # set by the SetEpoch callback at the start of every epoch
        self.shard = shard
        if batch_size % shard[1]:
            raise ValueError(f"batch size {batch_size} is not divisible by {shard[1]} processes")

    def __len__(self):
        return self.steps

    def whole_batches(self, shard=(0, 1)):
        """A view serving only full batches (of this process's `shard`): data parallelism
        splits each batch across devices, so a last batch smaller than the device count
        cannot be placed."""
        view = copy.copy(self)
        view.steps = max(1, len(self.indices) // self.batch_size) if not self.shuffle else self.steps
        view.shard = shard
        return view

    def positions(self, index):
        """(pass, figure index) pairs of this process's figures in batch `index` of this epoch."""
        batch = self.global_positions(index)
        process, processes = self.shard
        part = len(batch) // processes
        return batch[process * part:(process + 1) * part]

    def global_positions(self, index):
        """(pass, figure index) pairs of all figures in global batch `index` of this epoch."""
        n = len(self.indices)
        if not self.shuffle:  # evaluation: one fixed pass in file order
            start = index * self.batch_size
            return [(0, self.indices[i]) for i in range(start, min(n, start + self.batch_size))]
        per_pass = (n // self.batch_size) * self.batch_size if self.drop_remainder else n
        start = (self.epoch * self.steps + index) * self.batch_size
        out = []
        for p in range(start, start + self.batch_size):
            pass_no, i = divmod(p, max(per_pass, 1))
            order = self.order(pass_no)
            out.append((pass_no, self.indices[order[i % n]]))
        return out

    def order(self, pass_no):
        """The shuffled order (N,) of pass `pass_no` (cached: one pass is used many times)."""
        cached = getattr(self, "_order", None)
        if cached is None or cached[0] != pass_no:
            cached = (pass_no, np.random.default_rng([self.seed, pass_no]).permutation(len(self.indices)))
            self._order = cached
        return cached[1]

    def figure(self, pass_no, index):
        """Augmented (image (S, S, 3) uint8, keypoints (J, 3)) of figure `index` in pass `pass_no`."""
        record = self.figures[index]
        image, kp = resize_figure(canvas_image(record), record["keypoints"], self.size)
        rng = np.random.default_rng([self.seed, pass_no, int(index), 1])
        if self.augment != NO_AUGMENT:
            affine, flipped = random_affine(rng, self.size, self.augment)
            image, kp = warp_figure(image, kp, affine, flipped, self.flip_perm)
        if self.augment.color_jitter > 0:
            image = color_jitter(rng, image, self.augment.color_jitter)
        return image, kp

    def load_batch(self, index):
        """uint8 images (B, S, S, 3), float32 maps (B, M, M, J) in [0, 1] and keypoints (B, J, 3)."""
        images, keypoints = zip(*(self.figure(p, i) for p, i in self.positions(index)))
        m = self.size // self.stride
        maps = [render_confidence_maps(kp, m, self.stride, self.sigma) for kp in keypoints]
        return np.stack(images), np.stack(maps), np.stack(keypoints)

    def __getitem__(self, index):
        images, maps, keypoints = self.load_batch(index)
        labelled = (keypoints[:, :, 2] > 0).astype(np.float32)           # (B, J)
        mask = np.broadcast_to(labelled[:, None, None, :], maps.shape)
        target = np.concatenate([maps * 2.0 - 1.0, mask], axis=-1).astype(np.float32)
        return preprocess(images), (target,) * self.n_outputs

    def all_keypoints(self):
        """Keypoints (N, J, 3) of every figure of this dataset, resized, not augmented."""
        ratio = self.size / self.canvas_size
        kp = np.array(self.figures["keypoints"][self.indices], dtype=np.float32)
        kp[..., :2] = np.where(kp[..., 2:] > 0, (kp[..., :2] + 0.5) * ratio - 0.5, 0.0)
        return kp
