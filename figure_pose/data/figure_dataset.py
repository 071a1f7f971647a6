"""Training batches of figures: the host reads stored bytes, the device does the rest.

Host (`FigureBatches`, a Keras PyDataset): for every batch it reads only what is stored
for its figures, with positioned reads of `coco.npy` (`FigureFile`; no memory map grows
with the file): the uint8 crop (C, C, 3) of every canvas and its keypoints. It adds each
figure's augmentation as numbers (`draw_augmentation`): one 2x3 affine from stored-canvas
pixels to network-input pixels (flip, rotation, scale, shift, and the resize to --size
folded in), a flip flag and colour gains. No float image, map or mask is made on the host.

Device (`DeviceAugment`, a Keras layer written in keras.ops, so it runs on TensorFlow and
JAX alike): warps each crop through its affine with one bilinear resampling (white outside
the crop), jitters colour, normalises to [-1, 1] and moves the keypoints (left/right joints
swapped on a flip, unlabelled where they leave the input). The training model
(training.FigureTrainer) renders the target maps from the moved keypoints with the codec.

Randomness is a pure function of (seed, epoch, batch index): a batch is the same whichever
worker makes it, and a resumed run sees what an unbroken one saw. `reference_augment` is
the NumPy/OpenCV reference of the device path (tests compare them).
"""
import math
import os
from dataclasses import dataclass, field

import cv2
import keras
import numpy as np
from keras import ops

from figure_pose.core.cli import number
from figure_pose.core.figures import (figure_joint_names, flip_permutation, mirror_affine, open_figures, rescale_affine,
                                      rescale_pixel_coords, white_border)


def augment_range(default, help, type):  # noqa: A002 - argparse's names
    """An Augment field: its default, and the --help text and argparse type of its model.py flag."""
    return field(default=default, metadata={"help": help, "type": type})


@dataclass(frozen=True)
class Augment:
    """Augmentation ranges. The defaults are SimpleBaseline's (Xiao et al. 2018): flip, +-40 deg, +-30 % scale.

    Rotation is uniform in [-rotation, rotation] degrees, the shift in [-shift, shift] x the
    input side; colour jitter draws brightness, contrast and per-channel gains in [1 - j, 1 + j].
    """
    flip: float = augment_range(0.5, "horizontal flip probability, in [0, 1] (with left/right swap)", number(0, 1))
    rotation: float = augment_range(40.0, "max rotation, degrees (>= 0; SimpleBaseline's +-40)", number(0))
    scale_min: float = augment_range(0.7, "min zoom factor (> 0; SimpleBaseline's scale +-30%)",
                                     number(0, above=True))
    scale_max: float = augment_range(1.3, "max zoom factor (> 0, >= --scale-min)", number(0, above=True))
    shift: float = augment_range(0.05, "max shift, fraction of the canvas side (>= 0)", number(0))
    color_jitter: float = augment_range(0.0, "colour jitter strength (>= 0; 0: off)", number(0))


NO_AUGMENT = Augment(flip=0.0, rotation=0.0, scale_min=1.0, scale_max=1.0, shift=0.0)
N_PARAMS = 11  # per figure: affine (6), flipped (1), colour gains r, g, b (3), contrast (1)


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

# ----------------------------------------------------------------------------- host: reading


class FigureFile:
    """Positioned reads of the leading fields and the crop of `coco.npy` records.

    A record is image_id .. keypoints (the small "head" fields), then the figure crop, then
    the stored maps (never read here). Reads go straight from the file into the caller's
    arrays (os.preadv, which releases the GIL), so memory stays flat in the file size and
    reading threads run in parallel. Picklable for worker processes (the file is reopened).
    """

    def __init__(self, path):
        figures = open_figures(path)  # validates the file; a memory map, nothing read
        self.path, self.dtype, self.count = path, figures.dtype, len(figures)
        self.data_offset = int(figures.offset)
        crop_offset = self.dtype.fields["figure"][1]
        names = [n for n in self.dtype.names if self.dtype.fields[n][1] < crop_offset]
        self.head_dtype = np.dtype({"names": names, "formats": [self.dtype.fields[n][0] for n in names],
                                    "offsets": [self.dtype.fields[n][1] for n in names],
                                    "itemsize": crop_offset})
        self.crop_shape = self.dtype["figure"].shape
        self.canvas_size = int(figures[0]["canvas_size"])
        self.joint_names = list(figure_joint_names(figures))
        expected = self.data_offset + self.count * self.dtype.itemsize
        if os.path.getsize(path) < expected:
            raise ValueError(f"{path} is truncated ({os.path.getsize(path)} bytes, {expected} expected)")
        self._fd = None

    def __getstate__(self):
        return {**self.__dict__, "_fd": None}

    def _file(self):
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def read(self, indices, crops=None):
        """(heads (n,) of head_dtype, crops (n, C, C, 3) uint8) of records `indices`.

        crops: an array to read into (allocated if None); pass crops=False for heads only.
        """
        indices = np.asarray(indices, dtype=np.int64)
        heads = np.empty((len(indices), self.head_dtype.itemsize), np.uint8)
        if crops is None:
            crops = np.empty((len(indices),) + self.crop_shape, np.uint8)
        fd, item = self._file(), self.dtype.itemsize
        for k, i in enumerate(indices):
            buffers = [heads[k]] if crops is False else [heads[k], crops[k]]
            want = sum(b.nbytes for b in buffers)
            if os.preadv(fd, buffers, self.data_offset + int(i) * item) != want:
                raise ValueError(f"{self.path}: record {i} is truncated")
        return heads.view(self.head_dtype).reshape(len(indices)), crops

    def small_fields(self, chunk=4096):
        """The head fields (image_id, annotation_id, bbox, affine, keypoints, ...) of every
        record, (N,) of head_dtype, read in chunks: about 250 bytes a figure."""
        return np.concatenate([self.read(np.arange(s, min(s + chunk, self.count)), crops=False)[0]
                               for s in range(0, self.count, chunk)])


def resize_keypoints(keypoints, ratio):
    """Keypoints (..., J, 3) of an S0 canvas on the same canvas resized to ratio * S0
    (pixel-centre convention); unlabelled joints stay (0, 0, 0)."""
    kp = np.array(keypoints, dtype=np.float32)
    kp[..., :2] = np.where(kp[..., 2:] > 0, rescale_pixel_coords(kp[..., :2], ratio), 0.0)
    return kp

# ----------------------------------------------------------------------------- host: augmentation numbers


def draw_augmentation(rng, n, augment, canvas_size, size):
    """Augmentation numbers (n, N_PARAMS) float32 for n figures, drawn from `augment`.

    Columns 0-5: the 2x3 affine stored-canvas pixels -> input pixels, row-major: resize to
    `size`, then flip about the centre (figures.mirror_x), rotate and scale about the
    centre (cv2.getRotationMatrix2D's matrix), shift. Column 6: 1.0 if flipped.
    Columns 7-9: colour gains (brightness times a per-channel gain); column 10: contrast.
    """
    centre = (size - 1) / 2.0
    flipped = rng.random(n) < augment.flip
    angle = np.deg2rad(rng.uniform(-augment.rotation, augment.rotation, n))
    scale = rng.uniform(augment.scale_min, augment.scale_max, n)
    shift = rng.uniform(-augment.shift, augment.shift, (n, 2)) * size
    j = augment.color_jitter
    gains = rng.uniform(1 - j, 1 + j, (n, 3)) * rng.uniform(1 - j, 1 + j, (n, 1))
    contrast = rng.uniform(1 - j, 1 + j, n)

    flip = np.tile(np.eye(3), (n, 1, 1))
    flip[flipped] = np.vstack([mirror_affine(size), [0.0, 0.0, 1.0]])
    a, b = scale * np.cos(angle), scale * np.sin(angle)
    rotate = np.tile(np.eye(3), (n, 1, 1))
    rotate[:, 0, :] = np.stack([a, b, (1 - a) * centre - b * centre], -1)
    rotate[:, 1, :] = np.stack([-b, a, b * centre + (1 - a) * centre], -1)
    move = np.tile(np.eye(3), (n, 1, 1))
    move[:, :2, 2] = shift
    resize = np.vstack([rescale_affine(size / canvas_size), [0.0, 0.0, 1.0]])  # canvas -> input pixels
    affine = (move @ rotate @ flip @ resize)[:, :2]                            # (n, 2, 3)
    return np.concatenate([affine.reshape(n, 6), flipped[:, None], gains, contrast[:, None]],
                          axis=1).astype(np.float32)


class FigureBatches(keras.utils.PyDataset):
    """Batches for `model.fit`: dicts of the stored bytes and the augmentation numbers.

    Each batch is {"figure": uint8 (B, C, C, 3) stored crops (the canvas without its white
    border), "keypoints": float32 (B, J, 3) in stored-canvas pixels, "augment": float32
    (B, N_PARAMS)}; `DeviceAugment` turns it into network inputs. One epoch is `steps`
    batches (default: one pass); batches run on through successive shuffled passes, so
    --steps-per-epoch never repeats a figure early. Without shuffling (validation) one pass
    in file order, not augmented (the affine only resizes).

    shard = (process, processes): in multi-process training every process serves its own
    contiguous part (B / processes figures) of the same global batch of B figures.
    """

    def __init__(self, path, indices=None, batch_size=8, size=None, augment=NO_AUGMENT, seed=0,
                 shuffle=True, steps=None, drop_remainder=None, shard=(0, 1), **kwargs):
        super().__init__(**kwargs)
        self.file = FigureFile(path)
        self.path = path
        self.indices = np.arange(self.file.count) if indices is None else np.asarray(indices)
        if len(self.indices) == 0:
            raise ValueError(f"{path}: no figures to make batches from")
        self.canvas_size = self.file.canvas_size
        self.size = size or self.canvas_size
        self.batch_size, self.augment, self.seed, self.shuffle = batch_size, augment, seed, shuffle
        self.drop_remainder = shuffle if drop_remainder is None else drop_remainder
        passes = len(self.indices) // batch_size if self.drop_remainder else len(self.indices) / batch_size
        self.steps = steps or max(1, math.ceil(passes))
        self.flip_perm = flip_permutation(self.file.joint_names)
        self.n_joints = len(self.flip_perm)
        self.epoch = 0  # set by callbacks.SetEpoch at the start of every epoch
        self.shard = shard
        if batch_size % shard[1]:
            raise ValueError(f"batch size {batch_size} is not divisible by {shard[1]} processes")

    def __len__(self):
        return self.steps

    def whole_batches(self, shard=(0, 1)):
        """A copy serving only full batches (of this process's `shard`): data parallelism
        splits each batch across devices, so a last batch smaller than the device count
        cannot be placed."""
        steps = max(1, len(self.indices) // self.batch_size) if not self.shuffle else self.steps
        view = FigureBatches(self.path, self.indices, self.batch_size, self.size, self.augment, self.seed,
                             self.shuffle, steps, self.drop_remainder, shard)
        view.epoch = self.epoch
        return view

    def shard_part(self, n_global):
        """The slice of a global batch of n_global figures that this process serves."""
        process, processes = self.shard
        part = n_global // processes
        return slice(process * part, (process + 1) * part)

    def global_positions(self, index):
        """Figure indices (<= B,) of all figures in global batch `index` of this epoch."""
        n = len(self.indices)
        if not self.shuffle:  # evaluation: one fixed pass in file order
            return self.indices[index * self.batch_size:(index + 1) * self.batch_size]
        per_pass = (n // self.batch_size) * self.batch_size if self.drop_remainder else n
        start = (self.epoch * self.steps + index) * self.batch_size
        out = []
        for p in range(start, start + self.batch_size):
            pass_no, i = divmod(p, max(per_pass, 1))
            out.append(self.indices[self.order(pass_no)[i % n]])
        return np.array(out)

    def order(self, pass_no):
        """The shuffled order (N,) of pass `pass_no` (cached: one pass is used many times)."""
        cached = getattr(self, "_order", None)
        if cached is None or cached[0] != pass_no:
            cached = (pass_no, np.random.default_rng([self.seed, pass_no]).permutation(len(self.indices)))
            self._order = cached
        return cached[1]

    def augmentation(self, index, n_global):
        """Augmentation numbers (n_global, N_PARAMS) of global batch `index` of this epoch."""
        if not self.shuffle or self.augment == NO_AUGMENT:
            return draw_augmentation(np.random.default_rng(0), n_global, NO_AUGMENT, self.canvas_size, self.size)
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        return draw_augmentation(rng, n_global, self.augment, self.canvas_size, self.size)

    def __getitem__(self, index):
        positions = self.global_positions(index)
        part = self.shard_part(len(positions))
        heads, crops = self.file.read(positions[part])
        return {"figure": crops, "keypoints": np.ascontiguousarray(heads["keypoints"]),
                "augment": self.augmentation(index, len(positions))[part]}

    def small_fields(self):
        """Head fields (image_id, keypoints, ...) of this dataset's figures, (N,), read in chunks."""
        return self.file.small_fields()[self.indices]

    def input_keypoints(self):
        """Keypoints (N, J, 3) of this dataset's figures at the input size, not augmented."""
        return resize_keypoints(self.small_fields()["keypoints"], self.size / self.canvas_size)

# ----------------------------------------------------------------------------- device


def invert_affines(affine):
    """Inverses (B, 2, 3) of 2x3 affines (B, 2, 3), in keras.ops."""
    a, b, c = affine[:, 0, 0], affine[:, 0, 1], affine[:, 0, 2]
    d, e, f = affine[:, 1, 0], affine[:, 1, 1], affine[:, 1, 2]
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    rows = [ops.stack([ia, ib, -(ia * c + ib * f)], -1), ops.stack([id_, ie, -(id_ * c + ie * f)], -1)]
    return ops.stack(rows, axis=1)


def warp_crops(crops, affine, border, size):
    """Bilinear samples (B, size, size, 3) float32 in 0..255 of uint8 crops (B, C, C, 3).

    affine (B, 2, 3) maps stored-canvas pixels to output pixels; the crop's pixel (0, 0) is
    canvas pixel (border, border). Everything outside the crop is white (255), as on the
    canvas. Pixel-centre convention, the same sampling as cv2.warpAffine(INTER_LINEAR).
    """
    batch, c = ops.shape(crops)[0], crops.shape[1]
    padded = ops.pad(crops, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=255)  # uint8: gathers move 1/4 the bytes
    inverse = invert_affines(affine)                                         # output -> canvas
    grid = ops.arange(size, dtype="float32")
    xs, ys = grid[None, None, :], grid[None, :, None]                        # (1, 1, S), (1, S, 1)
    src_x = (inverse[:, 0, 0, None, None] * xs + inverse[:, 0, 1, None, None] * ys
             + inverse[:, 0, 2, None, None] - border + 1.0)                  # (B, S, S) padded crop px
    src_y = (inverse[:, 1, 0, None, None] * xs + inverse[:, 1, 1, None, None] * ys
             + inverse[:, 1, 2, None, None] - border + 1.0)
    src_x, src_y = ops.clip(src_x, 0.0, c + 1.0), ops.clip(src_y, 0.0, c + 1.0)
    x0, y0 = ops.floor(src_x), ops.floor(src_y)
    wx, wy = (src_x - x0)[..., None], (src_y - y0)[..., None]                # (B, S, S, 1)
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    x1, y1 = ops.minimum(x0 + 1, c + 1), ops.minimum(y0 + 1, c + 1)
    flat = ops.reshape(padded, (-1, 3))                                      # (B * (C+2)^2, 3)
    base = (ops.arange(batch, dtype="int32") * (c + 2) * (c + 2))[:, None, None]

    def at(y, x):
        return ops.cast(ops.take(flat, base + y * (c + 2) + x, axis=0), "float32")   # (B, S, S, 3)
    top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx
    return top * (1.0 - wy) + bottom * wy


def move_keypoints(keypoints, affine, flipped, flip_perm, size):
    """Keypoints (B, J, 3) through affines (B, 2, 3), left/right swapped where flipped (B,),
    set to (0, 0, 0) where unlabelled or outside the size x size input. In keras.ops."""
    xy = ops.einsum("bjk,bik->bji", keypoints[..., :2], affine[..., :2]) + affine[:, None, :, 2]
    moved = ops.concatenate([xy, keypoints[..., 2:]], axis=-1)
    swapped = ops.take(moved, ops.convert_to_tensor(flip_perm, "int32"), axis=1)
    moved = ops.where(flipped[:, None, None] > 0.5, swapped, moved)
    inside = ops.all((moved[..., :2] >= -0.5) & (moved[..., :2] <= size - 0.5), axis=-1)
    keep = inside & (moved[..., 2] > 0)
    return moved * ops.cast(keep, "float32")[..., None]


def jitter_colour(images, gains, contrast):
    """Contrast about each image's mean, then per-channel gains, clipped to 0..255 (B, S, S, 3)."""
    mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
    images = (images - mean) * contrast[:, None, None, None] + mean
    return ops.clip(images * gains[:, None, None, :], 0.0, 255.0)


@keras.saving.register_keras_serializable(package="figure_pose")
class DeviceAugment(keras.layers.Layer):
    """A FigureBatches batch -> (images (B, S, S, 3) in [-1, 1], keypoints (B, J, 3) in input px).

    Runs on the accelerator, in float32 whatever the mixed-precision policy. Used only by
    the training model, never saved inside an inference model.
    """

    def __init__(self, size, canvas_size, flip_perm, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.size, self.canvas_size, self.flip_perm = int(size), int(canvas_size), [int(i) for i in flip_perm]

    def call(self, batch):
        params = ops.cast(batch["augment"], "float32")
        affine = ops.reshape(params[:, :6], (-1, 2, 3))
        images = warp_crops(batch["figure"], affine, float(white_border(self.canvas_size)), self.size)
        images = jitter_colour(images, params[:, 7:10], params[:, 10])
        keypoints = move_keypoints(ops.cast(batch["keypoints"], "float32"), affine, params[:, 6],
                                   self.flip_perm, self.size)
        return images / 127.5 - 1.0, keypoints

    def get_config(self):
        return {**super().get_config(), "size": self.size, "canvas_size": self.canvas_size,
                "flip_perm": self.flip_perm}

# ----------------------------------------------------------------------------- NumPy reference


def reference_augment(canvas, keypoints, affine, flipped, flip_perm, size, border_value=255):
    """The device path for one figure, with OpenCV: a canvas (S0, S0, 3) and its keypoints
    (J, 3) through one 2x3 affine (the resize to `size` folded in). Returns (image (size,
    size, 3) of the canvas's dtype, keypoints (J, 3)): keypoints moved, swapped if `flipped`,
    (0, 0, 0) where unlabelled or outside."""
    affine = np.asarray(affine, dtype=np.float64).reshape(2, 3)
    image = cv2.warpAffine(canvas, affine, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(border_value,) * 3)
    kp = np.array(keypoints, dtype=np.float32)
    kp[:, :2] = kp[:, :2] @ affine[:, :2].T + affine[:, 2]
    if flipped:
        kp = kp[flip_perm]
    inside = (kp[:, :2] >= -0.5).all(axis=1) & (kp[:, :2] <= size - 0.5).all(axis=1)
    kp[~inside | (kp[:, 2] <= 0)] = 0.0
    return image, kp
