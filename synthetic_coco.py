"""A synthetic COCO person-keypoints dataset, laid out exactly like a real COCO download.

    python synthetic_coco.py --out sample --images 200

writes `sample/images/train2017/000000000001.jpg ...` and
`sample/annotations/person_keypoints_train2017.json`, so every tool that reads COCO can be
tested and demonstrated without the real 20 GB download.

Each picture shows 1-4 articulated cartoon people on a textured background. All of them
face the viewer (the person's left side is on the image's right) and have a face, so left
and right can be told apart from the pixels. People drawn later occlude earlier ones; a
joint covered by another person is labelled but not visible (v=1), a joint outside the
picture or randomly left out is unlabelled (v=0, x=y=0), as in COCO. One picture in
CROWD_EVERY also shows a small distant group, annotated as one `iscrowd` region.

Coordinates are (x, y) in pixels, x to the right, y down. Keypoints use the project's
convention: integer coordinates are pixel *centres* (as COCO keypoints are pixel indices).
Segmentation polygons and bboxes use COCO's continuous convention, in which pixel column c
covers [c, c + 1): that is how pycocotools rasterises polygons, so `COCO.annToMask`
reproduces each person's visible mask exactly (up to holes, which polygons cannot have).
"""
import argparse
import json
import os
import time

import cv2
import numpy as np
from pycocotools import mask as mask_utils

KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
SKELETON = [  # the official COCO skeleton, 1-based keypoint indices
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
    [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]
PERSON_CATEGORY = {"supercategory": "person", "id": 1, "name": "person",
                   "keypoints": list(KEYPOINTS), "skeleton": SKELETON}

CROWD_EVERY = 20        # one image in 20 (5 %) also shows a distant crowd
MIN_PIECE_PX = 12       # visible mask pieces smaller than this are dropped
UNLABELLED_RATE = 0.03  # fraction of labelled joints left unlabelled at random
SUBPIXEL_SHIFT = 4      # cv2 drawing with 4 fractional bits: float vertices to 1/16 px
JPEG_QUALITY = 95

# Body proportions as fractions of the figure height H (head top to soles), in the
# person's local frame: origin at the pelvis centre, x to the image right, y down.
SHOULDER = (0.105, -0.30)   # (half width, y) of the shoulder joints
HIP = (0.065, 0.0)
NECK_Y = -0.335
HEAD = (0.095, 0.052, 0.068)  # head centre above the neck, head radii x and y
UPPER_ARM, FOREARM, THIGH, SHIN = 0.165, 0.15, 0.245, 0.225
TORSO = ((0.05, -0.335), (0.12, -0.31), (0.115, -0.24), (0.085, -0.08), (0.09, -0.02))
PELVIS = ((0.09, -0.05), (0.095, 0.04), (0.0, 0.06))  # right half; mirrored for the left

# Arm poses: name -> (weight, shoulder angle range, elbow bend range) in degrees.
# Angles are measured from straight down, positive away from the body (90 = sideways,
# 180 = straight up); the elbow bend is added to the shoulder angle.
ARM_POSES = {
    "down": (0.30, (-5, 25), (-20, 20)),
    "hips": (0.10, (30, 55), (-120, -80)),
    "front": (0.10, (5, 30), (-150, -100)),
    "side": (0.12, (60, 110), (-30, 30)),
    "up": (0.13, (120, 175), (-30, 30)),
    "wave": (0.10, (60, 100), (60, 100)),
    "any": (0.15, (-20, 175), (-140, 140)),
}
# Leg poses: name -> (weight, hip angle range, knee bend range, thigh length factor range).
LEG_POSES = {
    "stand": (0.35, (-3, 12), (-8, 8), (0.95, 1.0)),
    "walk": (0.25, (-8, 25), (-25, 5), (0.85, 1.0)),
    "wide": (0.12, (18, 40), (-30, 5), (0.9, 1.0)),
    "sit": (0.13, (5, 35), (-45, 5), (0.25, 0.5)),
    "squat": (0.08, (35, 60), (-70, -35), (0.6, 0.8)),
    "kick": (0.07, (45, 85), (-40, 0), (0.9, 1.0)),
}
SKIN_TONES = ((255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66),
              (141, 85, 36), (92, 51, 23), (60, 35, 20))
HAIR_COLOURS = ((0, 0, 0), (40, 25, 15), (90, 60, 30), (200, 160, 90), (150, 150, 150),
                (120, 40, 20))


# ----------------------------------------------------------------------------- colours

def random_colour(rng, low=0, high=255):
    """A random RGB colour (tuple of 3 ints), each channel uniform in [low, high]."""
    return tuple(int(c) for c in rng.integers(low, high + 1, 3))


def clothing_colour(rng, black_rate):
    """A clothing colour: pure black (0, 0, 0) with probability black_rate, else random."""
    if rng.random() < black_rate:
        return (0, 0, 0)
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(40, 256), rng.integers(40, 256)]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def outline_colour(colour):
    """A darker shade of colour for part outlines (lighter for near-black colours)."""
    if max(colour) < 50:
        return tuple(c + 55 for c in colour)
    return tuple(int(c * 0.55) for c in colour)


def figure_colours(rng):
    """Colours of one figure's parts: skin, hair, shirt, trousers, shoes, and sleeves."""
    tone = np.array(SKIN_TONES[rng.integers(len(SKIN_TONES))]) + rng.integers(-12, 13, 3)
    skin = tuple(int(c) for c in np.clip(tone, 0, 255))
    shirt = clothing_colour(rng, 0.15)
    trousers = clothing_colour(rng, 0.2)
    sleeves = rng.choice(["long", "short", "none"], p=[0.5, 0.4, 0.1])
    return {
        "skin": skin,
        "hair": HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))],
        "shirt": shirt,
        "trousers": trousers,
        "shoes": clothing_colour(rng, 0.4),
        "upper_arm": skin if sleeves == "none" else shirt,
        "forearm": shirt if sleeves == "long" else skin,
        "shin": skin if rng.random() < 0.25 else trousers,  # shorts
    }


# ----------------------------------------------------------------------------- background

def gradient(rng, width, height):
    """float32 H x W x 3 linear blend of two random colours along a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    t = xs * np.cos(angle) + ys * np.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    a, b = np.float32(random_colour(rng)), np.float32(random_colour(rng))
    return a + t[..., None] * (b - a)


def pattern(rng, width, height):
    """float32 H x W x 3 stripes, checkerboard or smooth noise in two random colours."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # stripes at a random angle and period
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        t = (np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period) > 0)
    elif kind == 1:  # checkerboard
        cell = rng.uniform(8, 40)
        t = (np.floor(xs / cell) + np.floor(ys / cell)) % 2
    else:  # smooth noise: a coarse random grid upsampled
        coarse = rng.random((rng.integers(3, 9), rng.integers(3, 9))).astype(np.float32)
        t = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    t = np.clip(t.astype(np.float32), 0, 1)
    a, b = np.float32(random_colour(rng)), np.float32(random_colour(rng))
    return a + t[..., None] * (b - a)


def add_clutter(rng, image):
    """Draw 0-12 random filled rectangles, ellipses and thick lines onto image (in place)."""
    height, width = image.shape[:2]
    for _ in range(rng.integers(0, 13)):
        colour = random_colour(rng)
        x0, x1 = sorted(rng.integers(-20, width + 20, 2))
        y0, y1 = sorted(rng.integers(-20, height + 20, 2))
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)), colour, -1)
        elif kind == 1:
            axes = (max(1, int(x1 - x0) // 2), max(1, int(y1 - y0) // 2))
            cv2.ellipse(image, (int(x0 + x1) // 2, int(y0 + y1) // 2), axes,
                        float(rng.uniform(0, 180)), 0, 360, colour, -1)
        else:
            cv2.line(image, (int(x0), int(y0)), (int(x1), int(y1)), colour, int(rng.integers(2, 10)))


def random_background(rng, width, height):
    """uint8 H x W x 3 RGB background: gradient and/or pattern, clutter and sensor noise."""
    layers = [gradient(rng, width, height), pattern(rng, width, height)]
    weight = rng.choice([0.0, rng.uniform(0.2, 0.8), 1.0])
    blend = np.float32(weight) * layers[0] + np.float32(1 - weight) * layers[1]
    image = np.clip(blend, 0, 255).astype(np.uint8)
    add_clutter(rng, image)
    noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(2, 8)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- pose

def sample_range(rng, bounds):
    """A float uniform in bounds = (low, high)."""
    return float(rng.uniform(*bounds))


def random_arm(rng):
    """(shoulder angle, elbow bend, length factor) of one arm, degrees (see ARM_POSES)."""
    names = list(ARM_POSES)
    weights = np.array([ARM_POSES[n][0] for n in names])
    _, shoulder, elbow = ARM_POSES[names[rng.choice(len(names), p=weights / weights.sum())]]
    return sample_range(rng, shoulder), sample_range(rng, elbow), float(rng.uniform(0.8, 1.0))


def random_legs(rng):
    """[(hip angle, knee bend, thigh factor, shin factor)] for the left and right leg."""
    names = list(LEG_POSES)
    weights = np.array([LEG_POSES[n][0] for n in names])
    name = names[rng.choice(len(names), p=weights / weights.sum())]
    _, hip, knee, thigh = LEG_POSES[name]

    def leg():
        return [sample_range(rng, hip), sample_range(rng, knee), sample_range(rng, thigh),
                float(rng.uniform(0.85, 1.0))]
    legs = [leg(), leg()]
    if name in ("walk", "kick"):  # only one leg steps or kicks; the other stands
        _, hip, knee, thigh = LEG_POSES["stand"]
        legs[rng.integers(2)] = [sample_range(rng, hip), sample_range(rng, knee),
                                 sample_range(rng, thigh), 1.0]
    return [tuple(leg) for leg in legs]


def random_pose(rng):
    """Joint angles of one figure: arms, legs, head yaw/tilt and body build."""
    arms = [random_arm(rng), random_arm(rng)]
    if rng.random() < 0.3:  # symmetric arms (both up, hands on hips, ...)
        arms[1] = arms[0]
    return {
        "arms": arms,  # [left, right]
        "legs": random_legs(rng),
        "head_yaw": float(np.clip(rng.normal(0, 22), -65, 65)),  # > 0 turns to image right
        "head_tilt": float(rng.uniform(-15, 15)),
        "build": float(rng.uniform(0.85, 1.2)),  # widens the torso and limbs
    }


def limb_direction(angle, side):
    """Unit (x, y) vector of a limb at `angle` degrees from straight down, away from the
    body on `side` (+1: the person's left = image right, -1: the person's right)."""
    a = np.radians(angle)
    return np.array([side * np.sin(a), np.cos(a)])


def rotate(points, degrees, centre=(0.0, 0.0)):
    """Rotate (..., 2) points by degrees (clockwise on screen, as y points down) about centre."""
    a = np.radians(degrees)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    centre = np.asarray(centre, dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) - centre) @ r.T + centre


# ----------------------------------------------------------------------------- geometry

def ellipse_points(centre, rx, ry, tilt=0.0, start=0.0, stop=360.0, n=24):
    """(n, 2) points on an ellipse of radii rx, ry (pixels) tilted by tilt degrees."""
    t = np.radians(np.linspace(start, stop, n, endpoint=(stop - start) < 360))
    return rotate(np.stack([rx * np.cos(t), ry * np.sin(t)], -1), tilt) + centre


def capsule(p0, p1, r0, r1):
    """Convex polygon (n, 2) of a tapered capsule from p0 (radius r0) to p1 (radius r1)."""
    pts = np.concatenate([ellipse_points(p0, r0, r0, n=16), ellipse_points(p1, r1, r1, n=16)])
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def face_keypoints(head_centre, rx, ry, yaw, tilt):
    """Face keypoints (5, 2) (nose, eyes, ears) and a (5,) bool 'seen from the front' flag.

    A face feature at horizontal angle phi around the head (0 = facing the viewer) appears
    at x = rx * sin(phi); it is visible while |phi| is below its limit.
    """
    angles = np.array([yaw, yaw + 35, yaw - 35, yaw + 90, yaw - 90])  # left side = +x
    heights = np.array([0.25, -0.1, -0.1, 0.05, 0.05]) * ry
    limits = np.array([85, 75, 75, 95, 95])
    offsets = np.stack([rx * np.sin(np.radians(angles)), heights], -1)
    return rotate(offsets, tilt) + head_centre, np.abs(angles) <= limits


def figure_geometry(pose):
    """Every point and polygon of a figure (pose["height"] px tall) in its local frame.

    Returns a dict: "keypoints" (17, 2) in COCO order, "face_front" (5,) bool, and the
    part shapes used for drawing. Local frame: pelvis centre at (0, 0), x right, y down.
    """
    h, build = pose["height"], pose["build"]
    sides = (+1, -1)  # left, right
    shoulders = [np.array([s * SHOULDER[0] * build * h, SHOULDER[1] * h]) for s in sides]
    hips = [np.array([s * HIP[0] * build * h, HIP[1] * h]) for s in sides]
    elbows, wrists, knees, ankles = [], [], [], []
    for side, shoulder, (angle, bend, factor) in zip(sides, shoulders, pose["arms"]):
        elbows.append(shoulder + UPPER_ARM * h * factor * limb_direction(angle, side))
        wrists.append(elbows[-1] + FOREARM * h * factor * limb_direction(angle + bend, side))
    for side, hip, (angle, bend, thigh, shin) in zip(sides, hips, pose["legs"]):
        knees.append(hip + THIGH * h * thigh * limb_direction(angle, side))
        ankles.append(knees[-1] + SHIN * h * shin * limb_direction(angle + bend, side))

    neck = np.array([0.0, NECK_Y * h])
    head_centre = rotate(neck + [0.0, -HEAD[0] * h], pose["head_tilt"], neck)
    rx, ry = HEAD[1] * h, HEAD[2] * h
    face, face_front = face_keypoints(head_centre, rx, ry, pose["head_yaw"], pose["head_tilt"])
    body = np.stack(shoulders + elbows + wrists + hips + knees + ankles)  # left, right pairs
    keypoints = np.concatenate([face, body])
    torso_right = np.array(TORSO) * [-build * h, h]
    pelvis_right = np.array(PELVIS) * [-build * h, h]
    return {
        "keypoints": keypoints,
        "face_front": face_front,
        "height": h,
        "build": build,
        "head": (head_centre, rx, ry),
        "neck": neck,
        "shoulders": shoulders, "elbows": elbows, "wrists": wrists,
        "hips": hips, "knees": knees, "ankles": ankles,
        "torso": np.concatenate([torso_right, torso_right[::-1] * [-1, 1]]),
        "pelvis": np.concatenate([pelvis_right, pelvis_right[-2::-1] * [-1, 1]]),
    }


# ----------------------------------------------------------------------------- drawing

def fill(layer, mask, polygon, colour, outline=True):
    """Fill a float polygon (n, 2) into the RGB layer and the 0/1 mask (if any), identically.

    Vertices are sub-pixel (integer = pixel centre); the optional 1 px outline is a
    darker shade of colour and belongs to the mask too.
    """
    pts = [np.round(np.asarray(polygon) * (1 << SUBPIXEL_SHIFT)).astype(np.int32).reshape(-1, 1, 2)]
    cv2.fillPoly(layer, pts, colour, cv2.LINE_8, SUBPIXEL_SHIFT)
    if outline:
        cv2.polylines(layer, pts, True, outline_colour(colour), 1, cv2.LINE_8, SUBPIXEL_SHIFT)
    if mask is not None:
        cv2.fillPoly(mask, pts, 1, cv2.LINE_8, SUBPIXEL_SHIFT)
        if outline:
            cv2.polylines(mask, pts, True, 1, 1, cv2.LINE_8, SUBPIXEL_SHIFT)


def draw_face(layer, points, front, skin, size):
    """Eyes, nose and mouth onto layer only (they lie inside the head's mask).

    points: the 5 face keypoints in image pixels; front: which of them face the viewer;
    size: the dot radius in pixels. The mouth is a short line under the nose.
    """
    dark = (20, 15, 15) if max(skin) > 70 else (230, 230, 230)
    for eye, seen in zip(points[1:3], front[1:3]):
        if seen:
            fill(layer, None, ellipse_points(eye, size, size, n=8), dark, False)
    nose, eyes_middle = points[0], (points[1] + points[2]) / 2
    fill(layer, None, ellipse_points(nose, size, 0.8 * size, n=8), outline_colour(skin), False)
    down = nose - eyes_middle  # from between the eyes towards the nose
    across = np.array([-down[1], down[0]]) * 1.8 * size / max(np.linalg.norm(down), 1e-6)
    mouth = np.round(np.stack([nose + 0.7 * down - across, nose + 0.7 * down + across])
                     * (1 << SUBPIXEL_SHIFT)).astype(np.int32)
    cv2.line(layer, tuple(mouth[0]), tuple(mouth[1]), dark, 1, cv2.LINE_8, SUBPIXEL_SHIFT)


def draw_figure(shape, pose, colours, centre, angle):
    """Render one figure: RGB layer (H x W x 3 uint8), 0/1 mask (H x W uint8), keypoints
    (17, 2) in image pixels and the face points' (5,) 'seen from the front' flags.

    The figure is built in its local frame (figure_geometry), rotated by `angle` degrees
    and moved so its pelvis centre lies at `centre` (x, y) in image pixels. Parts are drawn
    back to front: legs, pelvis, torso, neck, ears, head, hair, face, arms.
    """
    layer = np.zeros(shape + (3,), np.uint8)
    mask = np.zeros(shape, np.uint8)
    g = figure_geometry(pose)
    h, b, tilt = g["height"], g["build"], pose["head_tilt"]

    def to_image(points):
        return rotate(points, angle) + centre

    def part(local_polygon, colour, outline=True):
        fill(layer, mask, to_image(local_polygon), colour, outline)

    for hip, knee, ankle, side in zip(g["hips"], g["knees"], g["ankles"], (1, -1)):
        part(capsule(hip, knee, 0.052 * b * h, 0.04 * b * h), colours["trousers"])
        part(capsule(knee, ankle, 0.038 * b * h, 0.028 * b * h), colours["shin"])
        foot = ankle + [side * 0.012 * h, 0.018 * h]
        part(ellipse_points(foot, 0.036 * h, 0.02 * h), colours["shoes"])
    part(g["pelvis"], colours["trousers"])
    part(g["torso"], colours["shirt"])
    head_centre, rx, ry = g["head"]
    part(capsule(g["neck"] + [0, 0.02 * h], head_centre, 0.024 * b * h, 0.024 * b * h), colours["skin"])
    for ear, seen in zip(g["keypoints"][3:5], g["face_front"][3:5]):
        if seen:
            part(ellipse_points(ear, 0.25 * rx, 0.35 * ry, tilt, n=10), colours["skin"])
    part(ellipse_points(head_centre, rx, ry, tilt), colours["skin"])
    # hair: the top half of the head, shifted towards the back of the turned head
    back = -0.15 * rx * np.sin(np.radians(pose["head_yaw"]))
    hair_centre = head_centre + rotate([back, -0.12 * ry], tilt)
    part(ellipse_points(hair_centre, 1.04 * rx, 0.95 * ry, tilt, 180, 360, 14), colours["hair"], False)
    draw_face(layer, to_image(g["keypoints"][:5]), g["face_front"], colours["skin"], max(0.7, 0.011 * h))
    for shoulder, elbow, wrist in zip(g["shoulders"], g["elbows"], g["wrists"]):
        part(capsule(shoulder, elbow, 0.032 * b * h, 0.026 * b * h), colours["upper_arm"])
        part(capsule(elbow, wrist, 0.024 * b * h, 0.02 * b * h), colours["forearm"])
        hand = wrist + 0.025 * h * (wrist - elbow) / max(np.linalg.norm(wrist - elbow), 1e-6)
        part(ellipse_points(hand, 0.028 * h, 0.028 * h, n=12), colours["skin"])
    return layer, mask, to_image(g["keypoints"]), g["face_front"]


# ----------------------------------------------------------------------------- scene

def random_person(rng, width, height, figure_height=None):
    """Pose, colours, pelvis position (x, y px) and rotation (degrees) of one figure.

    The figure height is log-uniform from ~50 px to 95 % of the image height unless given;
    up to ~15 % of a figure may fall outside the image.
    """
    if figure_height is None:
        low, high = min(50.0, 0.8 * height), 0.95 * height
        figure_height = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    pose = random_pose(rng)
    pose["height"] = figure_height
    top, bottom = 0.35 * figure_height, height - 0.34 * figure_height
    y = rng.uniform(top, bottom) if top < bottom else height / 2
    return {
        "pose": pose,
        "colours": figure_colours(rng),
        "centre": (float(rng.uniform(0.05 * width, 0.95 * width)), float(y)),
        "angle": float(np.clip(rng.normal(0, 6), -15, 15)),
    }


def random_crowd(rng, width, height):
    """3-6 small figures (26-46 px tall) standing close together, for an iscrowd region."""
    n = int(rng.integers(3, 7))
    figure_height = rng.uniform(26, 46)
    x0 = rng.uniform(0.1 * width, 0.9 * width)
    feet = rng.uniform(0.3 * height, 0.95 * height)
    spacing = figure_height * rng.uniform(0.2, 0.35)
    people = []
    for i in range(n):
        person = random_person(rng, width, height, figure_height * rng.uniform(0.85, 1.1))
        person["centre"] = (float(x0 + (i - n / 2) * spacing + rng.normal(0, 2)),
                            float(feet - 0.48 * person["pose"]["height"] + rng.normal(0, 2)))
        people.append(person)
    return people


def remove_small_pieces(mask, min_px=MIN_PIECE_PX):
    """bool copy of mask without its 8-connected pieces of fewer than min_px pixels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
    return keep[labels]


def label_keypoints(rng, points, face_front, visible):
    """COCO keypoints (17, 3): x, y (pixel centres), v, for a figure's drawn points.

    v=0 (and x=y=0) outside the image or at random (UNLABELLED_RATE); v=2 where the
    figure's own visible mask lies within 1 px; v=1 where it does not (another figure
    covers the joint) and for face points on the far side of the head (those are left
    unlabelled half of the time).
    """
    height, width = visible.shape
    out = np.zeros((len(points), 3))
    for k, (x, y) in enumerate(points):
        if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            continue
        col, row = int(round(x)), int(round(y))
        seen = visible[max(0, row - 1):row + 2, max(0, col - 1):col + 2].any()
        v = 2 if seen else 1
        if k < len(face_front) and not face_front[k]:
            v = 1 if rng.random() < 0.5 else 0
        if rng.random() < UNLABELLED_RATE:
            v = 0
        if v:
            out[k] = (x, y, v)
    return out


def render_image(seed, index, width, height):
    """One synthetic picture and its people, deterministic for (seed, index).

    Returns (image, people): image is H x W x 3 uint8 RGB; people is a list, in drawing
    order, of dicts with "mask" (H x W bool visible pixels, small pieces removed),
    "keypoints" ((17, 3) float, x, y, v; zeros for a crowd) and "iscrowd" (0 or 1).
    People with no visible pixels left are omitted.
    """
    rng = np.random.default_rng([seed, index])
    image = random_background(rng, width, height)
    groups = []  # (iscrowd, [figures]): each group becomes one annotation
    if index % CROWD_EVERY == CROWD_EVERY // 2:
        groups.append((1, random_crowd(rng, width, height)))
    n_people = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.2, 0.15]))
    people = sorted((random_person(rng, width, height) for _ in range(n_people)),
                    key=lambda p: p["pose"]["height"])  # larger = nearer = drawn later
    groups += [(0, [p]) for p in people]

    owner = np.full((height, width), -1, np.int16)  # which group each pixel shows
    drawn_points = []
    for g, (_, figures) in enumerate(groups):
        for figure in figures:
            layer, mask, points, face_front = draw_figure(
                (height, width), figure["pose"], figure["colours"], figure["centre"], figure["angle"])
            on = mask.astype(bool)
            image[on] = layer[on]
            owner[on] = g
        drawn_points.append((points, face_front))

    result = []
    for g, (iscrowd, figures) in enumerate(groups):
        visible = remove_small_pieces(owner == g)
        if not visible.any():
            continue
        if iscrowd:
            keypoints = np.zeros((len(KEYPOINTS), 3))
        else:
            keypoints = label_keypoints(rng, *drawn_points[g], visible)
        result.append({"mask": visible, "keypoints": keypoints, "iscrowd": iscrowd})
    return image, result


# ----------------------------------------------------------------------------- annotations

def mask_to_polygons(mask):
    """COCO polygons (list of flat [x1, y1, x2, y2, ...] float lists) outlining mask.

    The outline follows pixel edges in COCO's continuous coordinates (pixel c covers
    [c, c + 1)), traced on a 2x upsampled mask so it passes 1/4 px outside the pixel
    centres; pycocotools then rasterises it back to exactly the mask (holes filled).
    """
    big = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        xy = (contour.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0
        if len(xy) >= 3:
            polygons.append([round(float(v), 2) for v in xy.ravel()])
    return polygons


def mask_to_rle(mask):
    """Uncompressed COCO RLE {"counts": [...], "size": [h, w]}: column-major run lengths,
    starting with a (possibly empty) run of zeros."""
    flat = mask.ravel(order="F").astype(np.uint8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def coco_annotation(person, annotation_id, image_id):
    """The COCO annotation dict of one rendered person (or crowd) from render_image."""
    mask = person["mask"]
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    keypoints = person["keypoints"]
    flat = []
    for x, y, v in keypoints:
        flat += [round(float(x), 2), round(float(y), 2), int(v)]
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": int(person["iscrowd"]),
        "segmentation": mask_to_rle(mask) if person["iscrowd"] else mask_to_polygons(mask),
        "area": float(mask.sum()),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "num_keypoints": int((keypoints[:, 2] > 0).sum()),
        "keypoints": flat,
    }


def image_entry(image_id, width, height):
    """The COCO "images" entry of one picture (12-digit zero-padded file name)."""
    return {"license": 1, "file_name": f"{image_id:012d}.jpg", "coco_url": "", "height": height,
            "width": width, "date_captured": "2017-01-01 00:00:00", "flickr_url": "", "id": image_id}


def make_synthetic_coco(out_dir, n_images=200, split="train2017", seed=0, size=(320, 240)):
    """Write n_images pictures and their COCO keypoint annotations under out_dir.

    size is (width, height) in pixels. Layout: out_dir/images/<split>/<12-digit id>.jpg and
    out_dir/annotations/person_keypoints_<split>.json. Deterministic for a seed.
    Returns counts: images, persons, crowd, multi_polygon, and visible, occluded and
    unlabelled joints of the persons.
    """
    width, height = size
    image_dir = os.path.join(out_dir, "images", split)
    annotation_dir = os.path.join(out_dir, "annotations")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(annotation_dir, exist_ok=True)
    images, annotations = [], []
    for index in range(n_images):
        image_id = index + 1
        picture, people = render_image(seed, index, width, height)
        cv2.imwrite(os.path.join(image_dir, f"{image_id:012d}.jpg"),
                    cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        images.append(image_entry(image_id, width, height))
        for person in people:
            annotations.append(coco_annotation(person, len(annotations) + 1, image_id))
    dataset = {
        "info": {"description": "figure-pose synthetic COCO-format person keypoints",
                 "url": "", "version": "1.0", "year": 2017, "contributor": "synthetic_coco.py",
                 "date_created": "2017/01/01"},
        "licenses": [{"url": "", "id": 1, "name": "Synthetic images, free to use"}],
        "images": images,
        "annotations": annotations,
        "categories": [PERSON_CATEGORY],
    }
    with open(os.path.join(annotation_dir, f"person_keypoints_{split}.json"), "w") as f:
        json.dump(dataset, f)

    persons = [a for a in annotations if not a["iscrowd"]]
    v = np.array([a["keypoints"][2::3] for a in persons]).reshape(-1)
    return {
        "images": len(images),
        "persons": len(persons),
        "crowd": len(annotations) - len(persons),
        "multi_polygon": sum(len(a["segmentation"]) > 1 for a in persons),
        "visible_joints": int((v == 2).sum()),
        "occluded_joints": int((v == 1).sum()),
        "unlabelled_joints": int((v == 0).sum()),
    }


def random_figures_file(path, n=16, size=320, n_joints=13, seed=0):
    """A small `coco.npy` of n random-noise figures (2 per image) with every joint labelled
    inside the canvas: for tests and benchmarks that need the file format, not people."""
    from figure_pose.core.figures import figure_dtype
    rng = np.random.default_rng(seed)
    records = np.zeros(n, dtype=figure_dtype(n_joints, size))
    records["image_id"] = np.arange(n) // 2
    records["annotation_id"] = np.arange(n)
    records["canvas_size"] = size
    records["figure"] = rng.integers(0, 255, records["figure"].shape, dtype=np.uint8)
    keypoints = rng.uniform(size * 0.3, size * 0.7, (n, n_joints, 3)).astype(np.float32)
    keypoints[..., 2] = 2
    records["keypoints"] = keypoints
    np.save(path, records)
    return str(path)


def parse_size(text):
    """'320x240' -> (320, 240): width and height in pixels."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, not {text!r}") from None
    if width < 64 or height < 64:
        raise argparse.ArgumentTypeError(f"size {text} is too small (at least 64x64)")
    return width, height


def main():
    parser = argparse.ArgumentParser(
        description="Write a synthetic person-keypoints dataset laid out like a COCO download: "
                    "OUT/images/SPLIT/*.jpg and OUT/annotations/person_keypoints_SPLIT.json.")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--images", type=int, default=200,
                        help="number of pictures to write (default 200)")
    parser.add_argument("--split", default="train2017",
                        help="split name used in the folder and file names (default train2017)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; the same seed gives identical files (default 0)")
    parser.add_argument("--size", type=parse_size, default=(320, 240),
                        help="picture size WIDTHxHEIGHT in pixels (default 320x240)")
    args = parser.parse_args()
    start = time.time()
    counts = make_synthetic_coco(args.out, args.images, args.split, args.seed, args.size)
    seconds = time.time() - start
    print(f"wrote {counts['images']} images ({args.size[0]}x{args.size[1]}) to "
          f"{os.path.join(args.out, 'images', args.split)} in {seconds:.1f} s")
    print(f"persons: {counts['persons']} ({counts['multi_polygon']} with several polygons), "
          f"crowd regions: {counts['crowd']}")
    print(f"joints: {counts['visible_joints']} visible, {counts['occluded_joints']} occluded (v=1), "
          f"{counts['unlabelled_joints']} unlabelled (v=0)")


if __name__ == "__main__":
    main()
