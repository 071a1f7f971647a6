"""Gaussian confidence maps: encoding keypoints to maps and decoding maps to keypoints.

The one codec shared by preprocessing, training, evaluation and inference (the same idea
as mmpose's MSRAHeatmap codec): `render_confidence_maps` and `decode_keypoints` are
inverses of each other up to sub-pixel refinement error.

Maps are channels-last, (M, M, J) for an S x S canvas with M = S / stride. Map pixel
(u, v) covers canvas pixels [stride*u, stride*u + stride) and its centre is at canvas
x = (u + 0.5) * stride - 0.5 (pixel-centre convention, see figures.py). A labelled joint
(visibility 1 or 2) gets exp(-d^2 / (2 sigma^2)) with its peak of 1 exactly at the
keypoint; an unlabelled one (visibility 0) an all-zero map.
"""
import cv2
import numpy as np

SIGMA = 8.0  # Gaussian sigma in canvas pixels (the original's covariance of 64 px^2)
STRIDE = 4   # canvas pixels per map pixel: 320 x 320 canvas -> 80 x 80 maps


def canvas_to_map(xy, stride=STRIDE):
    """Canvas pixel coordinates -> map pixel coordinates (same x, y order)."""
    return (np.asarray(xy, dtype=np.float64) + 0.5) / stride - 0.5


def map_to_canvas(uv, stride=STRIDE):
    """Map pixel coordinates -> canvas pixel coordinates (inverse of canvas_to_map)."""
    return (np.asarray(uv, dtype=np.float64) + 0.5) * stride - 0.5


def render_confidence_maps(keypoints, map_size, stride=STRIDE, sigma=SIGMA):
    """float32 (map_size, map_size, J) maps in [0, 1] for keypoints (J, 3) in canvas pixels.

    keypoints[:, 2] is the COCO visibility; joints with visibility 0 get zero maps.
    Separable: each map is the outer product of a row and a column Gaussian.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    uv = canvas_to_map(keypoints[:, :2], stride)                       # (J, 2)
    s = sigma / stride
    grid = np.arange(map_size, dtype=np.float64)
    gx = np.exp(-(grid[None, :] - uv[:, :1]) ** 2 / (2 * s * s))       # (J, M) along x
    gy = np.exp(-(grid[None, :] - uv[:, 1:]) ** 2 / (2 * s * s))       # (J, M) along y
    gx *= (keypoints[:, 2] > 0)[:, None]
    return np.einsum("jy,jx->yxj", gy, gx).astype(np.float32)


def quantise_maps(maps):
    """[0, 1] float maps -> uint8 (value * 255, rounded) for storage."""
    return np.round(np.clip(maps, 0.0, 1.0) * 255.0).astype(np.uint8)


def dequantise_maps(maps_uint8):
    """uint8 stored maps -> float32 in [0, 1]."""
    return np.asarray(maps_uint8, dtype=np.float32) / 255.0


def flip_maps(maps, flip_perm):
    """Mirror maps (..., M, M, J) left-right and swap left/right channels.

    A canvas point x maps to S - 1 - x, which is exactly map column M - 1 - u.
    """
    return np.asarray(maps)[..., :, ::-1, :][..., flip_perm]


def _dark_offsets(log_maps, ix, iy):
    """Sub-pixel offsets (J, 2) by a second-order Taylor step on log maps (DARK, Zhang 2020).

    log_maps: (M, M, J); ix, iy: (J,) integer argmax positions at least 1 px from the edge.
    """
    j = np.arange(log_maps.shape[-1])
    at = lambda dy, dx: log_maps[iy + dy, ix + dx, j]  # noqa: E731
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
    """Keypoints (..., J, 3) = canvas x, y and confidence from maps (..., M, M, J).

    Confidence is the map's peak value. refine: "dark" (Gaussian-smoothed log-map Taylor
    step, exact for Gaussian maps), "quarter" (move 1/4 px towards the higher neighbour,
    as in SimpleBaseline) or "none" (integer argmax).
    """
    maps = np.asarray(maps, dtype=np.float32)
    lead = maps.shape[:-3]
    flat = maps.reshape((-1,) + maps.shape[-3:])
    out = np.stack([_decode_one(m, stride, sigma, refine) for m in flat])
    return out.reshape(lead + out.shape[-2:])


def _decode_one(maps, stride, sigma, refine):
    """decode_keypoints for one (M, M, J) stack."""
    m_h, m_w, n_joints = maps.shape
    flat_index = maps.reshape(-1, n_joints).argmax(axis=0)
    iy, ix = np.unravel_index(flat_index, (m_h, m_w))
    peak = maps[iy, ix, np.arange(n_joints)]
    uv = np.stack([ix, iy], axis=-1).astype(np.float64)
    inner = (ix > 0) & (ix < m_w - 1) & (iy > 0) & (iy < m_h - 1)
    cx, cy = np.clip(ix, 1, m_w - 2), np.clip(iy, 1, m_h - 2)
    if refine == "dark":
        s = sigma / stride
        k = 2 * int(np.ceil(3 * s)) + 1
        smooth = cv2.GaussianBlur(maps, (k, k), s, borderType=cv2.BORDER_CONSTANT)
        if smooth.ndim == 2:  # cv2 drops a channel axis of 1
            smooth = smooth[..., None]
        offset = _dark_offsets(np.log(np.maximum(smooth, 1e-10)), cx, cy)
        uv += np.where(inner[:, None], offset, 0.0)
    elif refine == "quarter":
        j = np.arange(n_joints)
        sx = np.sign(maps[cy, cx + 1, j] - maps[cy, cx - 1, j])
        sy = np.sign(maps[cy + 1, cx, j] - maps[cy - 1, cx, j])
        uv += 0.25 * np.where(inner[:, None], np.stack([sx, sy], -1), 0.0)
    elif refine != "none":
        raise ValueError(f"unknown refine {refine!r}; choose dark, quarter or none")
    xy = map_to_canvas(uv, stride)
    return np.concatenate([xy, peak[:, None].astype(np.float64)], axis=-1).astype(np.float32)
