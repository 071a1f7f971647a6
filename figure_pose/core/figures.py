"""Single human figures: the joints, the crop geometry and the `coco.npy` record format.

Coordinate convention, used everywhere in this project: points are (x, y) in pixels, x to
the right, y down, and integer coordinates are pixel *centres* (the convention of
`cv2.warpAffine`). "Original" coordinates are those of the COCO photo; "canvas"
coordinates are those of the size x size figure canvas (320 x 320 by default).

A figure is the original repository's format: the person (masked from its segmentation,
background white) cropped at its bbox, centred on a white square of side max(w, h), with
a white frame of side / 5 on every side, scaled to the canvas. That whole chain is one
scale-and-shift affine, `figure_transform`, stored per figure so every prediction can be
mapped back to the photo with `invert_affine`.
"""
import json
import os

import cv2
import numpy as np

# ----------------------------------------------------------------------------- joints

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# Per-keypoint OKS sigmas of the COCO keypoint benchmark (pycocotools COCOeval).
COCO_OKS_SIGMAS = dict(zip(COCO_KEYPOINTS, np.array(
    [.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0))
# The original repository keeps 13 joints: the 17 COCO keypoints without eyes and ears.
JOINT_SETS = {
    13: tuple(n for n in COCO_KEYPOINTS if not n.endswith(("_eye", "_ear"))),
    17: COCO_KEYPOINTS,
}
SKELETON = (  # limbs drawn in pictures, by joint name; pairs with a missing joint are skipped
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
    ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
    ("right_eye", "right_ear"), ("nose", "left_shoulder"), ("nose", "right_shoulder"),
)


def joint_names(n_joints):
    """The joint names of a 13- or 17-joint figure, in channel order."""
    if n_joints not in JOINT_SETS:
        raise ValueError(f"unsupported number of joints {n_joints}; choose one of {sorted(JOINT_SETS)}")
    return JOINT_SETS[n_joints]


def coco_indices(names):
    """Index of each joint in the 17 COCO keypoints (to pick columns of COCO annotations)."""
    return np.array([COCO_KEYPOINTS.index(n) for n in names])


def flip_permutation(names):
    """Channel permutation that swaps left and right joints (for horizontal flips)."""
    def mirrored(name):
        if name.startswith("left_"):
            return "right_" + name[5:]
        if name.startswith("right_"):
            return "left_" + name[6:]
        return name
    return np.array([names.index(mirrored(n)) for n in names])


def skeleton_indices(names):
    """SKELETON as (i, j) channel pairs of the joints in `names`."""
    return [(names.index(a), names.index(b)) for a, b in SKELETON if a in names and b in names]


# ----------------------------------------------------------------------------- geometry

FRAME_RATIO = 0.2  # white frame on each side = side / 5 (the original's `side // 5`)


def figure_transform(bbox, size=320, frame_ratio=FRAME_RATIO):
    """2x3 affine mapping original-image pixels to canvas pixels for one figure.

    bbox is COCO's (x, y, w, h) in original pixels. The bbox centre goes to the canvas
    centre ((size - 1) / 2 in pixel-centre coordinates) and the square of side max(w, h)
    plus its frame fills the canvas: scale = size / (max(w, h) * (1 + 2 * frame_ratio)).
    """
    x, y, w, h = (float(v) for v in bbox)
    side = max(w, h)
    if side <= 0:
        raise ValueError(f"degenerate bbox {bbox}")
    scale = size / (side * (1.0 + 2.0 * frame_ratio))
    centre = (size - 1) / 2.0
    return np.array([[scale, 0.0, centre - scale * (x + w / 2.0)],
                     [0.0, scale, centre - scale * (y + h / 2.0)]])


def invert_affine(affine):
    """Inverse of a 2x3 affine (canvas -> original for a figure transform)."""
    return cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64))


def apply_affine(affine, xy):
    """Map points (..., 2) in x, y order through a 2x3 affine; returns float64 (..., 2)."""
    xy = np.asarray(xy, dtype=np.float64)
    return xy @ np.asarray(affine, dtype=np.float64)[:, :2].T + np.asarray(affine)[:, 2]


def keypoints_to_canvas(keypoints, affine):
    """Original-image keypoints (J, 3: x, y, COCO visibility) -> canvas keypoints: labelled ones
    mapped through the figure's affine, unlabelled ones (0, 0, 0); the visibility is kept."""
    labelled = keypoints[:, 2] > 0
    canvas = np.zeros_like(keypoints)
    canvas[labelled, :2] = apply_affine(affine, keypoints[labelled, :2])
    canvas[:, 2] = keypoints[:, 2]
    return canvas


def rescale_pixel_coords(xy, ratio):
    """Coordinates of points xy on the same picture scaled by `ratio`: (xy + 0.5) * ratio - 0.5.

    Pixel-centre convention: pixel i covers [i - 0.5, i + 0.5), so a picture of side S spans
    [-0.5, S - 0.5) and scaling maps those edges onto each other (pixel centres do not map to
    pixel centres: canvas pixel 0 is map pixel -0.375 at stride 4). Used for canvas -> network
    input (ratio size / canvas size) and map -> input (ratio = stride). Plain arithmetic, so
    NumPy arrays, scalars and keras.ops tensors alike; `unscale_pixel_coords` is its inverse.
    """
    return (xy + 0.5) * ratio - 0.5


def unscale_pixel_coords(xy, ratio):
    """Inverse of rescale_pixel_coords: (xy + 0.5) / ratio - 0.5 (input -> map with ratio = stride)."""
    return (xy + 0.5) / ratio - 0.5


def rescale_affine(ratio_x, ratio_y=None):
    """rescale_pixel_coords as a 2x3 affine, ratio_x along x and ratio_y (default ratio_x) along y."""
    ratio_y = ratio_x if ratio_y is None else ratio_y
    return np.array([[ratio_x, 0.0, rescale_pixel_coords(0.0, ratio_x)],
                     [0.0, ratio_y, rescale_pixel_coords(0.0, ratio_y)]])


def mirror_x(x, size):
    """The horizontal mirror of a picture `size` pixels wide: x -> size - 1 - x (pixel centres onto
    pixel centres, edges onto edges; its own inverse). flip_maps is the same mirror of map columns."""
    return size - 1 - x


def mirror_affine(size):
    """mirror_x as a 2x3 affine (y unchanged)."""
    return np.array([[-1.0, 0.0, mirror_x(0.0, size)], [0.0, 1.0, 0.0]])


def _as3x3(affine):
    return np.vstack([np.asarray(affine, dtype=np.float64), [0.0, 0.0, 1.0]])


def warp_to_canvas(src, affine, size, border_value=255):
    """Warp `src` (H x W or H x W x C) into a size x size canvas through `affine`.

    Shrinking uses area interpolation (an exact-area `cv2.resize` of only the source
    window that reaches the canvas), then a bilinear warp for the small remainder; the
    composition equals `affine` to float precision. Pixels from outside `src` get
    `border_value`.
    """
    height, width = src.shape[:2]
    corners = apply_affine(invert_affine(affine), [[-1, -1], [size, -1], [-1, size], [size, size]])
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - 2, 0, width))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 3, 0, width))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - 2, 0, height))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 3, 0, height))
    if x1 <= x0 or y1 <= y0:  # the canvas sees none of the source
        shape = (size, size) + src.shape[2:]
        return np.full(shape, border_value, dtype=src.dtype)
    window = src[y0:y1, x0:x1]
    to_window = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])  # window -> source
    scale = float(affine[0][0])
    if scale < 1.0:
        new_w = max(1, int(round(window.shape[1] * scale)))
        new_h = max(1, int(round(window.shape[0] * scale)))
        rx, ry = new_w / window.shape[1], new_h / window.shape[0]
        window = cv2.resize(window, (new_w, new_h), interpolation=cv2.INTER_AREA)
        to_window = to_window @ _as3x3(rescale_affine(1 / rx, 1 / ry))  # resized pixel -> window pixel
    residual = (_as3x3(affine) @ to_window)[:2]
    border = (border_value,) * 4 if np.isscalar(border_value) else tuple(border_value)
    return cv2.warpAffine(window, residual, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def bbox_mask(bbox, height, width):
    """uint8 H x W mask of the pixels whose centres lie inside bbox (x, y, w, h)."""
    x, y, w, h = bbox
    mask = np.zeros((height, width), np.uint8)
    cols = slice(max(0, int(np.ceil(x))), min(width, int(np.floor(x + w)) + 1))
    rows = slice(max(0, int(np.ceil(y))), min(height, int(np.floor(y + h)) + 1))
    mask[rows, cols] = 1
    return mask


def render_figure(image_rgb, mask, bbox, size=320, frame_ratio=FRAME_RATIO):
    """The figure canvas (size x size x 3 uint8) and its affine, for one person.

    image_rgb: H x W x 3 uint8 original photo. mask: H x W (0/1) person mask, or None to
    keep the photo's background inside the bbox (`--background keep`). Pixels outside
    the mask and outside the bbox become white *by the mask*, never by their colour, so
    black clothing stays black.
    """
    affine = figure_transform(bbox, size, frame_ratio)
    keep = bbox_mask(bbox, *image_rgb.shape[:2])  # the original crops at the bbox
    if mask is not None:
        keep &= mask.astype(np.uint8)
    composed = np.where(keep[..., None].astype(bool), image_rgb, np.uint8(255))
    canvas = warp_to_canvas(composed, affine, size, border_value=255)
    border = white_border(size, frame_ratio)  # not stored, so make it white here
    canvas[:border] = canvas[size - border:] = 255
    canvas[:, :border] = canvas[:, size - border:] = 255
    return canvas, affine


# ----------------------------------------------------------------------------- records

def white_border(size, frame_ratio=FRAME_RATIO):
    """Width of the canvas border that is white in every figure, so is not stored.

    The figure's content (its bbox) lies inside the central square of side
    size / (1 + 2 * frame_ratio). We keep 4 more pixels on each side because bilinear
    upscaling spreads a bbox-edge pixel by one source pixel, which is up to 4.6 canvas
    pixels for the smallest figures (bbox side 50 px at 320). 41 px at 320.
    """
    return max(0, int(np.floor(size * frame_ratio / (1.0 + 2.0 * frame_ratio))) - 4)


def figure_dtype(n_joints, size=320, map_stride=None):
    """NumPy structured dtype of one `coco.npy` record (map_stride None: the codec's STRIDE).

    image_id, annotation_id: COCO ids. bbox: COCO (x, y, w, h), original pixels.
    affine: 2x3 float64, original pixels -> canvas pixels. keypoints: n_joints x 3 float32
    (canvas x, y, COCO visibility 0/1/2; unlabelled joints are 0, 0, 0).
    figure: the canvas without its always-white border (`white_border`), RGB uint8;
    `canvas_image` restores the full size x size x 3 canvas.
    confidence_maps: (size / map_stride)^2 x n_joints uint8, value / 255 = confidence,
    rendered by `confidence_maps.render_confidence_maps` (channels last).
    canvas_size: the canvas side, so the file describes itself.
    """
    if map_stride is None:
        from figure_pose.core.confidence_maps import STRIDE  # here: confidence_maps imports this module
        map_stride = STRIDE
    inner = size - 2 * white_border(size)
    if size % map_stride:
        raise ValueError(f"canvas size {size} is not a multiple of the map stride {map_stride}")
    m = size // map_stride
    return np.dtype([
        ("image_id", "<i8"), ("annotation_id", "<i8"), ("canvas_size", "<u2"),
        ("bbox", "<f4", (4,)), ("affine", "<f8", (2, 3)), ("keypoints", "<f4", (n_joints, 3)),
        ("figure", "u1", (inner, inner, 3)), ("confidence_maps", "u1", (m, m, n_joints)),
    ])


def canvas_image(record):
    """Full canvas (size x size x 3 uint8 RGB) of one record: its figure on white."""
    size = int(record["canvas_size"])
    border = white_border(size)
    canvas = np.full((size, size, 3), 255, np.uint8)
    canvas[border:size - border, border:size - border] = record["figure"]
    return canvas


def crop_to_record(canvas, record):
    """Store a full canvas into a record's `figure` field (inverse of `canvas_image`)."""
    border = white_border(canvas.shape[0])
    record["figure"] = canvas[border:canvas.shape[0] - border, border:canvas.shape[1] - border]


REQUIRED_FIELDS = ("image_id", "annotation_id", "canvas_size", "bbox", "affine",
                   "keypoints", "figure", "confidence_maps")


def open_figures(path):
    """Memory-map a `coco.npy` written by coco_process.py (nothing is read up front).

    Raises FileNotFoundError or ValueError with a one-line reason for anything else.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found (write it with coco_process.py)")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not a figure file written by coco_process.py")
    try:
        figures = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:  # EOFError: an empty file
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise ValueError(f"{path} is not a figure file written by coco_process.py ({reason})") from None
    if not isinstance(figures, np.ndarray):  # an .npz archive
        figures.close()
        raise ValueError(f"{path} is not a figure file written by coco_process.py (an .npz archive)")
    missing = [f for f in REQUIRED_FIELDS if figures.dtype.names is None or f not in figures.dtype.names]
    if missing or figures.ndim != 1:
        raise ValueError(f"{path} is not a figure file written by coco_process.py "
                         f"(missing fields: {', '.join(missing) or 'none'}; shape {figures.shape})")
    if len(figures) == 0:
        raise ValueError(f"{path} holds no figures")
    return figures


def read_sidecar(path):
    """The JSON written beside a `coco.npy` (joint names, settings, counts), or {}.

    coco_process.py writes the sidecar just before renaming the data into place, and names
    the data's size in it: a ValueError says the sidecar describes another file than `path`.
    """
    sidecar = path + ".json"
    if not os.path.exists(sidecar):
        return {}
    with open(sidecar) as f:
        info = json.load(f)
    size = os.path.getsize(path) if os.path.isfile(path) else None
    if isinstance(info, dict) and "data_bytes" in info and size is not None and size != info["data_bytes"]:
        raise ValueError(f"{sidecar} describes another file ({info['data_bytes']} bytes) than {path} "
                         f"({size} bytes): its run stopped before the rename; finish it with coco_process.py --resume")
    return info


def figure_joint_names(figures):
    """Joint names of a figure array, from its number of joints."""
    return joint_names(figures.dtype["keypoints"].shape[0])


# ----------------------------------------------------------------------------- crop geometry of predictions

def to_original(canvas_xy, affines):
    """Canvas points (N, J, >=2) -> original-image points (N, J, 2) via each figure's inverse affine."""
    canvas_xy = np.asarray(canvas_xy, dtype=np.float64)[..., :2]
    return np.stack([apply_affine(invert_affine(a), xy) for a, xy in zip(affines, canvas_xy)]) \
        if len(canvas_xy) else np.zeros((0,) + canvas_xy.shape[1:])


def gt_original(keypoints, affines):
    """Labelled canvas keypoints (N, J, 3) -> original pixels (N, J, 3); unlabelled stay 0, 0, 0."""
    kp = np.asarray(keypoints, dtype=np.float64)
    out = np.zeros_like(kp)
    labelled = kp[..., 2] > 0
    out[..., :2] = np.where(labelled[..., None], to_original(kp, affines), 0.0)
    out[..., 2] = kp[..., 2]
    return out


def mirror_keypoints(keypoints, canvas_size, flip_perm):
    """Canvas keypoints (J, 3) of the horizontally mirrored figure (x -> S - 1 - x, left/right swapped)."""
    kp = np.asarray(keypoints, dtype=np.float64)[flip_perm].copy()
    kp[:, 0] = np.where(kp[:, 2] > 0, mirror_x(kp[:, 0], canvas_size), 0.0)
    return kp
