"""Every picture the scripts write: crops on photos, evaluation grids, per-joint PCK bars,
training pictures and curves; each PNG written atomically (save_png, save_plot).

Images are RGB uint8; coordinates follow figures.py (x right, y down, integers at pixel centres).
"""
import csv
import functools
import io
import os

import cv2
import numpy as np

from figure_pose.core.atomic import write_atomic
from figure_pose.core.confidence_maps import dequantise_maps
from figure_pose.core.figures import FRAME_RATIO, canvas_image, joint_names, skeleton_indices


# ----------------------------------------------------------------------------- joints and maps

def joint_colour(name):
    """RGB colour of a joint in pictures: the person's left blue, right red, centre green."""
    return (30, 90, 255) if name.startswith("left_") else (230, 40, 40) if name.startswith("right_") else (0, 170, 0)


def draw_skeleton(image, xy, present, names, thickness=2, radius=4, limb=(255, 160, 0)):
    """Copy of an RGB image with limbs and joints at xy (J, 2) where `present` (J,) is true."""
    out = np.ascontiguousarray(image).copy()
    pts = [tuple(int(round(v)) for v in p) for p in np.asarray(xy, dtype=np.float64)]
    for i, j in skeleton_indices(list(names)):
        if present[i] and present[j]:
            cv2.line(out, pts[i], pts[j], limb, thickness, cv2.LINE_AA)
    for k in np.flatnonzero(present):
        cv2.circle(out, pts[k], radius, joint_colour(names[k]), -1, cv2.LINE_AA)
    return out


def summed_maps(maps01):
    """Joint maps (M, M, J) in [0, 1] summed into one (M, M) picture, scaled down to peak 1
    where maps overlap (never scaled up, so a weak prediction looks weak)."""
    total = np.asarray(maps01, dtype=np.float32).sum(-1)
    return total / max(float(total.max()), 1.0)


@functools.lru_cache(maxsize=1)
def jet_colours():
    """(256, 3) uint8 RGB: OpenCV's jet colour map as a table. cv2.applyColorMap builds the map
    anew on every call (7.6 ms, whatever the picture's size); a table lookup of a 64 x 64 map
    takes 0.07 ms, and an epoch's pictures make one per joint and figure."""
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1].copy()


def heat_image(map01, size):
    """One map (M, M) in [0, 1] (clipped) -> size x size x 3 uint8 RGB, jet colour map."""
    grey = (np.clip(np.asarray(map01, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)
    grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_LINEAR)
    return jet_colours()[grey]


def draw_crop(image, bbox, thickness=1, frame_ratio=FRAME_RATIO):
    """Copy of `image` with the figure's box (solid) and the square the model saw around it
    (the box's longer side plus a frame of frame_ratio on each side; dotted), both yellow."""
    out = np.ascontiguousarray(image).copy()
    x, y, w, h = (float(v) for v in bbox)
    colour = (255, 210, 0)
    cv2.rectangle(out, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))), colour,
                  thickness, cv2.LINE_8)
    half = max(w, h) * (0.5 + frame_ratio)
    cx, cy = x + w / 2, y + h / 2
    corners = [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    step = max(4.0, 6.0 * thickness)
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        n = max(1, int(np.hypot(x1 - x0, y1 - y0) / step))
        for k in range(0, n, 2):                        # every other segment: a dotted line
            a, b = k / n, min(1.0, (k + 1) / n)
            p = (int(round(x0 + a * (x1 - x0))), int(round(y0 + a * (y1 - y0))))
            q = (int(round(x0 + b * (x1 - x0))), int(round(y0 + b * (y1 - y0))))
            cv2.line(out, p, q, colour, thickness, cv2.LINE_8)
    return out


def label_columns(tiles_row, names, height=16):
    """A white strip (height, W, 3) with each name centred over its column of tiles_row (H, W, 3),
    the row being len(names) equal columns; joint names shortened to fit (l_, r_ for left_, right_)."""
    width = tiles_row.shape[1]
    tile = width // len(names)
    strip = np.full((height, width, 3), 255, np.uint8)
    for k, name in enumerate(names):
        text = name.replace("left_", "l_").replace("right_", "r_")
        scale = 0.33
        while scale > 0.2 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > tile - 2:
            scale -= 0.02
        size = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0]
        cv2.putText(strip, text, (k * tile + max(0, (tile - size[0]) // 2), height - 4), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def peaks_on_grey(image01, maps01, names, min_confidence=0.2):
    """The figure in grey with each joint's predicted peak (maps (M, M, J) in [0, 1]) as a ring in the
    joint's colour (left blue, right red, centre green), filled when its peak >= min_confidence.

    image01: (S, S, 3) float in [0, 1]. Returns uint8 RGB (S, S, 3)."""
    size = image01.shape[0]
    grey = cv2.cvtColor((np.clip(image01, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    out = cv2.cvtColor((128 + grey // 2).astype(np.uint8), cv2.COLOR_GRAY2RGB)   # light grey figure
    m = maps01.shape[0]
    stride = size / m
    radius = max(2, size // 48)
    for j, name in enumerate(names):
        v, u = np.unravel_index(np.argmax(maps01[..., j]), maps01.shape[:2])
        centre = (int(round((u + 0.5) * stride - 0.5)), int(round((v + 0.5) * stride - 0.5)))
        filled = maps01[v, u, j] >= min_confidence
        cv2.circle(out, centre, radius, joint_colour(name), -1 if filled else 1, cv2.LINE_AA)
    return out


def heat_tile(maps01, size):
    """Sum of maps (M, M, J) in [0, 1] as an RGB colour-mapped size x size tile."""
    return heat_image(summed_maps(maps01), size)


def figure_row(canvas, gt_kp, target01, pred01, pred_kp, names, tile=192, min_confidence=0.2):
    """input | target maps | predicted maps | predicted skeleton (labels as black + marks), one row.

    Predicted joints below min_confidence are not drawn.
    """
    size = canvas.shape[0]
    scale = tile / size
    small = cv2.resize(canvas, (tile, tile), interpolation=cv2.INTER_AREA)
    gt_present = gt_kp[:, 2] > 0
    drawn = draw_skeleton(small, pred_kp[:, :2] * scale + (scale - 1) / 2, pred_kp[:, 2] >= min_confidence, names)
    for k in np.flatnonzero(gt_present):
        p = tuple(int(round(v)) for v in gt_kp[k, :2] * scale + (scale - 1) / 2)
        cv2.drawMarker(drawn, p, (0, 0, 0), cv2.MARKER_CROSS, 7, 1)
    return np.concatenate([small, heat_tile(target01, tile), heat_tile(pred01, tile), drawn], axis=1)


def write_grid(path, rows, captions, tile=192):
    """Stack rows (H, 4 * tile, 3) under a header into one PNG (atomic; OSError); each row gets a caption."""
    header = np.full((28, rows[0].shape[1], 3), 255, np.uint8)
    for i, text in enumerate(("input", "target (maps summed)", "prediction (maps summed)", "prediction (+: label)")):
        cv2.putText(header, text, (i * tile + 6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    body = []
    for row, caption in zip(rows, captions):
        strip = np.full((18, row.shape[1], 3), 255, np.uint8)
        cv2.putText(strip, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        body += [row, strip]
    save_png(path, np.concatenate([header] + body, axis=0))


def plot_pck_per_joint(path, per_joint, names, baseline=None, title=""):
    """Bar chart of per-joint PCK at each threshold of per_joint ({"pck@T": {joint: value or None}})
    and the baseline's PCK at the largest as markers; a PNG, atomically (OSError)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = list(per_joint)
    fig, ax = plt.subplots(figsize=(max(7, 0.7 * len(names)), 4), dpi=100)
    width = 0.8 / len(keys)
    x = np.arange(len(names))
    for i, key in enumerate(keys):
        values = [per_joint[key][n] or 0.0 for n in names]
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, values, width, label=key.upper())
    if baseline is not None:
        ax.plot(x, [baseline[keys[-1]][n] or 0.0 for n in names], "k_", markersize=14,
                label=f"mean pose {keys[-1].upper()}")
    ax.set_xticks(x)
    ax.set_xticklabels([n.replace("_", " ") for n in names], rotation=45, ha="right")
    ax.set_ylim(0, 1.22)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("PCK")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=len(keys) + 1, frameon=False)
    fig.tight_layout()
    try:
        save_plot(path, fig, dpi=100)
    finally:
        plt.close(fig)


def write_pictures(out_dir, figures, index, pred, per_figure, shown, worst_maps, names):
    """examples.png (first figures) and worst.png (largest mean error / bbox side) of evaluated
    figures (records `figures`, the evaluated `index`, canvas predictions `pred` in index order);
    shown / worst_maps: {figure index: predicted maps}. Returns the paths written (OSError)."""
    written = []
    for name, maps in (("examples.png", shown), ("worst.png", worst_maps)):
        chosen = list(maps)
        if not chosen:
            continue
        if name == "worst.png":
            chosen = sorted(chosen, key=lambda i: -per_figure[np.searchsorted(index, i)])
        rows, captions = [], []
        for i in chosen:
            record = figures[i]
            k = int(np.searchsorted(index, i))
            rows.append(figure_row(canvas_image(record), record["keypoints"],
                                   dequantise_maps(record["confidence_maps"]), maps[i], pred[k], names))
            captions.append(f"image {int(record['image_id'])}, annotation {int(record['annotation_id'])}: "
                            f"mean error {per_figure[k]:.3f} x bbox side")
        path = os.path.join(out_dir, name)
        write_grid(path, rows, captions)
        written.append(path)
    return written


def save_png(path, rgb):
    """An RGB uint8 image (H, W, 3) as a PNG, atomically; OSError if it cannot be encoded or written."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {path} as PNG")
    write_atomic(path, png.tobytes())


def save_plot(path, fig, dpi=80):
    """A matplotlib figure as a PNG, atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    write_atomic(path, buffer.getvalue())

# ----------------------------------------------------------------------------- training pictures


def grid(tiles, cols):
    """Tile a list of equal (H, W, 3) uint8 images into rows of `cols` (the last row padded white)."""
    rows = [tiles[i:i + cols] for i in range(0, len(tiles), cols)]
    rows[-1] = rows[-1] + [np.full_like(tiles[0], 255)] * (cols - len(rows[-1]))
    return np.vstack([np.hstack(r) for r in rows])


def write_eval_pngs(out_dir, epoch, images, gt01, pred01):
    """The original's per-epoch pictures of a fixed batch into out_dir/EPOCH_{img_GT, heatmap_GT, heatmap,
    overlap}.png: images (B, S, S, 3) uint8, target and predicted maps (B, M, M, J) in [0, 1]."""
    os.makedirs(out_dir, exist_ok=True)
    size, cols = images.shape[1], min(4, len(images))
    save = lambda name, rgb: save_png(os.path.join(out_dir, f"{epoch:04d}_{name}.png"), rgb)  # noqa: E731
    save("img_GT", grid(list(images), cols))
    save("heatmap_GT", grid([heat_image(summed_maps(m), size) for m in gt01], cols))
    names = joint_names(pred01.shape[-1])
    per_joint = np.vstack([np.hstack([heat_image(summed_maps(m), size)] +
                                     [heat_image(m[..., j], size) for j in range(m.shape[-1])]) for m in pred01])
    save("heatmap", np.vstack([label_columns(per_joint, ["all joints", *names]), per_joint]))
    save("overlap", grid([peaks_on_grey(img / 255.0, m, names) for img, m in zip(images, pred01)], cols))


def plot_curves(csv_path, png_path):
    """Plot every loss and PCK column of log.csv against the epoch (counted from 1) into png_path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]  # log.csv counts from 0; the console's "Epoch 1/12" from 1
    # fixed margins: tight_layout measured every label each epoch, 0.28 -> 0.15 s a call on a CPU
    fig, (ax_loss, ax_pck) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw=dict(
        left=0.07, right=0.985, bottom=0.12, top=0.92, wspace=0.2))
    for key in rows[0]:
        values = [float(r[key]) if r[key] not in ("", "nan") else np.nan for r in rows]
        if key in ("loss", "val_loss"):
            ax_loss.plot(epochs, values, marker=".", label=key)
        elif "pck" in key:
            ax_pck.plot(epochs, values, marker=".", label=key, ls="--" if "baseline" in key else "-")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    ax_pck.set(xlabel="epoch", ylabel="PCK", ylim=(0, 1), title="validation PCK")
    for ax in (ax_loss, ax_pck):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    save_plot(png_path, fig, dpi=80)
    plt.close(fig)
