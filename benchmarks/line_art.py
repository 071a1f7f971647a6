"""Line-art renderings of a coco.npy: every figure's photo pixels become black edges on white.

    python benchmarks/line_art.py --data real.npy --out real_lines.npy
    python benchmarks/bench_real_slice.py --data real_lines.npy --out /tmp/cv_lines --reuse ...

Why: the figure-on-white design should carry over to drawings. Scoring a model trained on
photos on the same figures drawn as lines (same keypoints, maps and affines) says how much
of what it learned is shape rather than photo texture. The drawing is a difference of
Gaussians of the grey canvas, thresholded (the core of XDoG, Winnemoeller et al. 2012):
black where the fine blur is darker than the coarse one by more than --threshold grey levels.
The white background stays white, so the figure's outline is drawn too. The output has
the input's size and fields, so the input's sidecar (joints, settings, counts) is copied.
"""
import argparse
import os
import shutil
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from figure_pose.core.atomic import write_json  # noqa: E402
from figure_pose.core.figures import read_sidecar  # noqa: E402


def line_art(rgb_uint8, sigma=1.0, k=1.6, threshold=4.0):
    """(H, W, 3) uint8 RGB -> (H, W, 3) uint8: black (0) lines where the difference of Gaussians
    of the grey image (sigma and k x sigma pixels) is below -threshold grey levels, else white."""
    grey = cv2.cvtColor(rgb_uint8, cv2.COLOR_RGB2GRAY).astype(np.float32)
    fine = cv2.GaussianBlur(grey, (0, 0), sigma)
    coarse = cv2.GaussianBlur(grey, (0, 0), sigma * k)
    lines = np.where(fine - coarse < -threshold, 0, 255).astype(np.uint8)
    return np.repeat(lines[..., None], 3, axis=-1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="coco.npy to draw (coco_process.py)")
    p.add_argument("--out", required=True, help="the drawn coco.npy (its sidecar .json is written beside it)")
    p.add_argument("--sigma", type=float, default=1.0, help="fine blur, canvas pixels")
    p.add_argument("--threshold", type=float, default=4.0, help="grey levels of difference that make a line")
    p.add_argument("--example", help="also write the first 8 figures, photo above drawing, to this PNG")
    args = p.parse_args()
    shutil.copyfile(args.data, args.out + ".partial")  # the same header and size: the sidecar fits
    figures = np.load(args.out + ".partial", mmap_mode="r+")
    photos = np.array(figures["figure"][:8])
    for i in range(len(figures)):
        figures["figure"][i] = line_art(figures["figure"][i], args.sigma, threshold=args.threshold)
    figures.flush()
    os.replace(args.out + ".partial", args.out)
    write_json(args.out + ".json", read_sidecar(args.data))
    if args.example:
        strip = np.concatenate([np.concatenate(list(photos), axis=1),
                                np.concatenate(list(figures["figure"][:8]), axis=1)], axis=0)
        cv2.imwrite(args.example, cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    print(f"{len(figures)} figures drawn as lines -> {args.out}")


if __name__ == "__main__":
    main()
