"""Gaussian confidence maps: encoding keypoints to maps and decoding maps to keypoints.

`ConfidenceMapCodec` is the one codec (the idea of mmpose's MSRAHeatmap codec): it holds
the stride and the sigma, and preprocessing, training on the device, evaluation and
export all go through it, so they are defined once. The small one-job functions below it
do the work; `render_confidence_maps` and `decode_keypoints` are inverses of each other up
to sub-pixel refinement error.

Maps are channels-last, (M, M, J) for an S x S input with M = S / stride. Map pixel
(u, v) covers input pixels [stride*u, stride*u + stride) and its centre is at input
x = (u + 0.5) * stride - 0.5 (figures.rescale_pixel_coords: the pixel-centre convention). A labelled joint
(visibility 1 or 2) gets exp(-d^2 / (2 sigma^2)) with its peak of 1 exactly at the
keypoint; an unlabelled one (visibility 0) an all-zero map. The network predicts maps in
tanh range [-1, 1]: `to_tanh` / `from_tanh` convert.
"""
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from figure_pose.core.figures import rescale_pixel_coords, unscale_pixel_coords

SIGMA = 8.0  # Gaussian sigma in input pixels (the original's covariance of 64 px^2)
STRIDE = 4   # input pixels per map pixel: 320 x 320 input -> 80 x 80 maps


def canvas_to_map(xy, stride=STRIDE):
    """Input (canvas) pixel coordinates -> map pixel coordinates (same x, y order)."""
    return unscale_pixel_coords(np.asarray(xy, dtype=np.float64), stride)


def map_to_canvas(uv, stride=STRIDE):
    """Map pixel coordinates -> input pixel coordinates (inverse of canvas_to_map)."""
    return rescale_pixel_coords(np.asarray(uv, dtype=np.float64), stride)


def gaussian_maps(xy, labelled, map_size, stride, sigma, xp=np):
    """Maps (..., M, M, J) in [0, 1] for points xy (..., J, 2) in input pixels.

    labelled (..., J): 1 where the joint has a map, 0 for an all-zero map. `xp` is the
    array module: numpy on the host, keras.ops on the device (the same formula for both).
    Separable: each map is the outer product of a row and a column Gaussian.
    """
    uv = unscale_pixel_coords(xy, stride)                                  # (..., J, 2) map px
    grid = xp.arange(map_size, dtype="float32")                            # (M,)
    s2 = 2.0 * (sigma / stride) ** 2
    gx = xp.exp(-xp.square(grid - uv[..., 0:1]) / s2)                      # (..., J, M) along x
    gy = xp.exp(-xp.square(grid - uv[..., 1:2]) / s2)                      # (..., J, M) along y
    gx = gx * labelled[..., None]
    return xp.einsum("...jy,...jx->...yxj", gy, gx)                        # (..., M, M, J)


def render_confidence_maps(keypoints, map_size, stride=STRIDE, sigma=SIGMA):
    """float32 (map_size, map_size, J) maps in [0, 1] for keypoints (J, 3) in input pixels.

    keypoints[:, 2] is the COCO visibility; joints with visibility 0 get zero maps.
    """
    keypoints = np.asarray(keypoints, dtype=np.float32)
    labelled = (keypoints[..., 2] > 0).astype(np.float32)
    return gaussian_maps(keypoints[..., :2], labelled, map_size, stride, sigma).astype(np.float32)


def quantise_maps(maps):
    """[0, 1] float maps -> uint8 (value * 255, rounded) for storage."""
    return np.round(np.clip(maps, 0.0, 1.0) * 255.0).astype(np.uint8)


def dequantise_maps(maps_uint8):
    """uint8 stored maps -> float32 in [0, 1]."""
    return np.asarray(maps_uint8, dtype=np.float32) / 255.0


def labelled_with_map(keypoints, size, stride=STRIDE, sigma=SIGMA):
    """(J,) bool: the labelled keypoints (J, 3) of a size x size input whose stored (quantised)
    map is not empty. One on the input always has its peak there; one outside it is rendered
    to see (rare: most far-off ones have no map pixel within ~3.5 sigma)."""
    labelled = keypoints[:, 2] > 0
    xy = keypoints[:, :2]
    outside = labelled & ~((xy >= -0.5) & (xy < size - 0.5)).all(axis=1)  # pixel i covers [i - 0.5, i + 0.5)
    if outside.any():
        maps = quantise_maps(render_confidence_maps(keypoints[outside], size // stride, stride, sigma))
        labelled[outside] = maps.max(axis=(0, 1)) > 0
    return labelled


def flip_maps(maps, flip_perm):
    """Mirror maps (..., M, M, J) left-right and swap left/right channels.

    The input mirror x -> S - 1 - x (figures.mirror_x) is exactly map column u -> M - 1 - u.
    """
    return np.asarray(maps)[..., :, ::-1, :][..., flip_perm]


def _dark_offsets(log_maps, ix, iy):
    """Sub-pixel offsets (N, J, 2) by a second-order Taylor step on log maps (DARK, Zhang 2020).

    log_maps: (N, M, M, J); ix, iy: (N, J) integer argmax positions at least 1 px from the edge.
    """
    n, j = np.ogrid[:ix.shape[0], :ix.shape[1]]
    at = lambda dy, dx: log_maps[n, iy + dy, ix + dx, j]  # noqa: E731
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = at(0, 1) - 2 * at(0, 0) + at(0, -1)
    dyy = at(1, 0) - 2 * at(0, 0) + at(-1, 0)
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    safe = np.abs(det) > 1e-12
    det = np.where(safe, det, 1.0)
    off_x = np.where(safe, -(dyy * dx - dxy * dy) / det, 0.0)
    off_y = np.where(safe, -(dxx * dy - dxy * dx) / det, 0.0)
    return np.clip(np.stack([off_x, off_y], axis=-1), -1.0, 1.0)


def decode_keypoints(maps, stride=STRIDE, sigma=SIGMA, refine="dark"):
    """Keypoints (..., J, 3) = input x, y and confidence from maps (..., M, M, J).

    Confidence is the map's peak value. refine: "dark" (Gaussian-smoothed log-map Taylor
    step, exact for Gaussian maps), "quarter" (move 1/4 px towards the higher neighbour,
    as in SimpleBaseline) or "none" (integer argmax). Vectorised over the leading axes.
    """
    if refine not in ("dark", "quarter", "none"):
        raise ValueError(f"unknown refine {refine!r}; choose dark, quarter or none")
    maps = np.asarray(maps, dtype=np.float32)
    lead = maps.shape[:-3]
    flat = maps.reshape((-1,) + maps.shape[-3:])                              # (N, M, M, J)
    n_figures, m_h, m_w, n_joints = flat.shape
    flat_index = flat.reshape(n_figures, -1, n_joints).argmax(axis=1)         # (N, J)
    iy, ix = np.unravel_index(flat_index, (m_h, m_w))
    n, j = np.ogrid[:n_figures, :n_joints]
    peak = flat[n, iy, ix, j]
    uv = np.stack([ix, iy], axis=-1).astype(np.float64)                       # (N, J, 2)
    inner = (ix > 0) & (ix < m_w - 1) & (iy > 0) & (iy < m_h - 1)
    cx, cy = np.clip(ix, 1, m_w - 2), np.clip(iy, 1, m_h - 2)
    if refine == "dark":
        s = sigma / stride
        smooth = ndimage.gaussian_filter(flat, (0, s, s, 0), mode="constant",
                                         truncate=np.ceil(3 * s) / s)
        offset = _dark_offsets(np.log(np.maximum(smooth, 1e-10)), cx, cy)
        uv += np.where(inner[..., None], offset, 0.0)
    elif refine == "quarter":
        sx = np.sign(flat[n, cy, cx + 1, j] - flat[n, cy, cx - 1, j])
        sy = np.sign(flat[n, cy + 1, cx, j] - flat[n, cy - 1, cx, j])
        uv += 0.25 * np.where(inner[..., None], np.stack([sx, sy], -1), 0.0)
    xy = map_to_canvas(uv, stride)
    out = np.concatenate([xy, peak[..., None].astype(np.float64)], axis=-1).astype(np.float32)
    return out.reshape(lead + out.shape[-2:])


def argmax_keypoints(maps, stride, xp):
    """Device decoding: input x, y (B, J, 2) of each map's peak, moved 1/4 px towards the
    higher neighbour ("quarter"), from maps (B, M, M, J) in any range. `xp` = keras.ops."""
    m = maps.shape[1]
    flat = xp.reshape(xp.transpose(maps, (0, 3, 1, 2)), (-1, m * m))         # (B*J, M*M)
    index = xp.argmax(flat, axis=-1)
    iy, ix = index // m, index % m
    cx, cy = xp.clip(ix, 1, m - 2), xp.clip(iy, 1, m - 2)

    def value(y, x):
        return xp.squeeze(xp.take_along_axis(flat, (y * m + x)[:, None], axis=-1), -1)
    sx = xp.sign(value(cy, cx + 1) - value(cy, cx - 1))
    sy = xp.sign(value(cy + 1, cx) - value(cy - 1, cx))
    inner = xp.cast((ix > 0) & (ix < m - 1) & (iy > 0) & (iy < m - 1), "float32")
    u = xp.cast(ix, "float32") + 0.25 * sx * inner
    v = xp.cast(iy, "float32") + 0.25 * sy * inner
    xy = rescale_pixel_coords(xp.stack([u, v], axis=-1), stride)             # (B*J, 2)
    return xp.reshape(xy, (-1, maps.shape[-1], 2))


@dataclass(frozen=True)
class ConfidenceMapCodec:
    """Keypoints <-> Gaussian confidence maps for a network of input side S and maps S / stride.

    stride: input pixels per map pixel (4 for our network, 1 for the original's).
    sigma: the Gaussian's sigma in input pixels (8: the original's 64 px^2 covariance).
    Coordinates are input pixels, pixel-centre convention; maps are channels last.
    """
    stride: float = STRIDE
    sigma: float = SIGMA

    def map_size(self, input_size: int) -> int:
        """M for an input of side input_size."""
        return int(round(input_size / self.stride))

    def encode(self, keypoints, input_size: int):
        """(maps (..., M, M, J) float32 in [0, 1], weights (..., J) float32 1 = labelled) on the host."""
        keypoints = np.asarray(keypoints, dtype=np.float32)
        weights = (keypoints[..., 2] > 0).astype(np.float32)
        maps = gaussian_maps(keypoints[..., :2], weights, self.map_size(input_size), self.stride, self.sigma)
        return maps.astype(np.float32), weights

    def encode_on_device(self, xy, weights, input_size: int, ops):
        """Maps (B, M, M, J) in [0, 1] for xy (B, J, 2), weights (B, J) as `ops` (keras.ops) tensors."""
        return gaussian_maps(xy, weights, self.map_size(input_size), self.stride, self.sigma, xp=ops)

    def decode(self, maps, refine: str = "dark"):
        """Keypoints (..., J, 3): input x, y and peak confidence, from maps (..., M, M, J) in [0, 1]."""
        return decode_keypoints(maps, self.stride, self.sigma, refine)

    def decode_on_device(self, maps, ops):
        """Input x, y (B, J, 2) of maps (B, M, M, J) (argmax + quarter offset), in `ops`."""
        return argmax_keypoints(maps, self.stride, ops)

    def rescaled(self, ratio: float) -> "ConfidenceMapCodec":
        """The codec of the same maps seen on an input scaled by `ratio` (e.g. a model's maps
        decoded on the stored 320 canvas): stride and sigma scale together."""
        return ConfidenceMapCodec(self.stride * ratio, self.sigma * ratio)

    @staticmethod
    def flip(maps, flip_perm):
        """Mirror maps left-right and swap left/right channels (`flip_maps`)."""
        return flip_maps(maps, flip_perm)

    @staticmethod
    def to_tanh(maps01):
        """[0, 1] maps -> the network's tanh range [-1, 1]."""
        return maps01 * 2.0 - 1.0

    @staticmethod
    def from_tanh(outputs):
        """Network outputs in tanh range -> float32 maps in [0, 1] (clipped)."""
        return np.clip((np.asarray(outputs, dtype=np.float32) + 1.0) * 0.5, 0.0, 1.0)

    def to_json(self) -> dict:
        """The settings an exported model's decoder needs (export.json)."""
        return {"stride": self.stride, "sigma_px": self.sigma, "sigma_map_px": self.sigma / self.stride}


def codec_of_model(input_size: int, map_size: int) -> ConfidenceMapCodec:
    """The codec a model of this input and map side was trained with (stride = S / M)."""
    return ConfidenceMapCodec(stride=input_size / map_size, sigma=SIGMA)


ARCH_CODECS = {  # the codec each architecture is trained with
    "simple": ConfidenceMapCodec(stride=4, sigma=SIGMA),    # maps at S / 4
    "original": ConfidenceMapCodec(stride=1, sigma=SIGMA),  # maps at full size, as the original
}
