"""Tests of synthetic_coco.py: COCO layout and fields, masks, keypoints, variety.

The 60-image set is the session's synthetic sample (conftest.synthetic_sample, seed 0), the
one coco_process's tests cut figures from.
"""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import synthetic_coco as sc  # noqa: E402

SEED, N_IMAGES, SPLIT = 0, 60, "train2017"  # conftest.synthetic_sample's


@pytest.fixture(scope="module")
def dataset(synthetic_sample):
    """(out_dir, counts, COCO) of the session's 60-image synthetic set."""
    out, counts = synthetic_sample
    coco = COCO(str(out / "annotations" / f"person_keypoints_{SPLIT}.json"))
    return out, counts, coco


def person_anns(coco):
    return [a for a in coco.dataset["annotations"] if not a["iscrowd"]]


def keypoint_array(ann):
    return np.array(ann["keypoints"], dtype=np.float64).reshape(-1, 3)


def rendered_pairs(coco):
    """(annotation, rendered person, image entry) for every annotation, by re-rendering."""
    for image in coco.dataset["images"]:
        _, people = sc.render_image(SEED, image["id"] - 1, image["width"], image["height"])
        anns = sorted(coco.imgToAnns[image["id"]], key=lambda a: a["id"])
        assert len(anns) == len(people)
        yield from ((ann, person, image) for ann, person in zip(anns, people))


def test_deterministic_for_a_seed(tmp_path):
    first = sc.make_synthetic_coco(str(tmp_path / "a"), 8, seed=5)
    second = sc.make_synthetic_coco(str(tmp_path / "b"), 8, seed=5)
    other = sc.make_synthetic_coco(str(tmp_path / "c"), 8, seed=6)
    path = os.path.join("annotations", "person_keypoints_train2017.json")
    text = [open(tmp_path / d / path).read() for d in "abc"]
    assert first == second and text[0] == text[1]
    assert text[0] != text[2] and first != other
    jpg = os.path.join("images", "train2017", "000000000008.jpg")
    assert open(tmp_path / "a" / jpg, "rb").read() == open(tmp_path / "b" / jpg, "rb").read()


def test_coco_layout_and_official_fields(dataset):
    out, counts, coco = dataset
    data = coco.dataset
    assert {"info", "licenses", "images", "annotations", "categories"} <= set(data)
    assert data["categories"] == [{
        "supercategory": "person", "id": 1, "name": "person",
        "keypoints": ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                      "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                      "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"],
        "skeleton": [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7],
                     [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5],
                     [4, 6], [5, 7]]}]
    assert len(data["images"]) == counts["images"] == N_IMAGES
    for image in data["images"]:
        assert image["file_name"] == f"{image['id']:012d}.jpg"
        picture = cv2.imread(str(out / "images" / SPLIT / image["file_name"]))
        assert picture.shape == (image["height"], image["width"], 3) == (240, 320, 3)
    assert counts["persons"] == len(person_anns(coco)) == 146
    assert counts["crowd"] == len(data["annotations"]) - counts["persons"]


def test_ids_unique_and_paired(dataset):
    _, _, coco = dataset
    image_ids = [i["id"] for i in coco.dataset["images"]]
    ann_ids = [a["id"] for a in coco.dataset["annotations"]]
    assert len(set(image_ids)) == len(image_ids) == N_IMAGES
    assert len(set(ann_ids)) == len(ann_ids)
    assert {a["image_id"] for a in coco.dataset["annotations"]} <= set(image_ids)
    assert all(a["category_id"] == 1 for a in coco.dataset["annotations"])
    assert all(len(coco.imgToAnns[i]) >= 1 for i in image_ids)


def test_annotation_fields(dataset):
    _, _, coco = dataset
    for ann in coco.dataset["annotations"]:
        assert len(ann["bbox"]) == 4 and all(isinstance(v, float) for v in ann["bbox"])
        assert isinstance(ann["area"], float) and ann["area"] >= sc.MIN_PIECE_PX
        kp = keypoint_array(ann)
        assert kp.shape == (17, 3) and set(kp[:, 2]) <= {0, 1, 2}
        assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum())
        assert np.all(kp[kp[:, 2] == 0, :2] == 0)  # unlabelled joints are 0, 0, 0
        if ann["iscrowd"]:
            assert ann["num_keypoints"] == 0 and set(ann["segmentation"]) == {"counts", "size"}
            assert ann["segmentation"]["size"] == [240, 320]
        else:
            for polygon in ann["segmentation"]:
                assert len(polygon) >= 6 and len(polygon) % 2 == 0
                assert all(isinstance(v, float) for v in polygon)
    v = np.concatenate([keypoint_array(a)[:, 2] for a in person_anns(coco)])
    assert 0.7 < np.mean(v == 2) < 0.95  # mostly visible
    assert 0.03 < np.mean(v == 1) < 0.2  # some occluded by other people or the head
    assert 0.03 < np.mean(v == 0) < 0.2  # some outside the picture or left out
    labelled = np.concatenate([keypoint_array(a) for a in person_anns(coco)])
    xy = labelled[labelled[:, 2] > 0, :2]
    assert np.mean(xy != np.round(xy)) > 0.9  # sub-pixel float coordinates


def test_segmentation_matches_visible_mask(dataset):
    _, _, coco = dataset
    ious = []
    for ann, person, _ in rendered_pairs(coco):
        drawn = person["mask"]
        decoded = coco.annToMask(ann).astype(bool)
        ious.append((decoded & drawn).sum() / (decoded | drawn).sum())
        assert ann["area"] == drawn.sum()
        rows, cols = np.nonzero(drawn)  # COCO bbox: pixel c covers [c, c + 1)
        assert ann["bbox"] == [cols.min(), rows.min(), np.ptp(cols) + 1, np.ptp(rows) + 1]
        assert ann["iscrowd"] == person["iscrowd"]
    assert min(ious) > 0.9
    assert np.median(ious) == 1.0  # exact unless the outline encloses background holes


def test_visible_keypoints_lie_on_their_mask(dataset):
    _, counts, coco = dataset
    n_visible = 0
    for image in coco.dataset["images"]:
        width, height = image["width"], image["height"]
        for ann in coco.imgToAnns[image["id"]]:
            kp = keypoint_array(ann)
            labelled = kp[kp[:, 2] > 0]
            assert np.all((labelled[:, 0] >= 0) & (labelled[:, 0] <= width - 1))
            assert np.all((labelled[:, 1] >= 0) & (labelled[:, 1] <= height - 1))
            outside = (1 - coco.annToMask(ann)).astype(np.uint8)
            distance = cv2.distanceTransform(outside, cv2.DIST_L2, 5)  # px to the mask
            for x, y, _ in kp[kp[:, 2] == 2]:
                assert distance[int(round(y)), int(round(x))] <= 2.0
                n_visible += 1
    assert n_visible == counts["visible_joints"] == 2004


def test_occluded_keypoints_are_covered_by_others(dataset):
    """Body joints (not face points) with v=1 lie off the person's own visible mask."""
    _, _, coco = dataset
    n = 0
    for ann, person, _ in rendered_pairs(coco):
        kp = keypoint_array(ann)
        for x, y, v in kp[5:]:
            if v == 1:
                col, row = int(round(x)), int(round(y))
                assert not person["mask"][max(0, row - 1):row + 2, max(0, col - 1):col + 2].any()
                n += 1
    assert n == 105


def test_crowd_and_multi_polygon_annotations(dataset):
    _, counts, coco = dataset
    crowds = [a for a in coco.dataset["annotations"] if a["iscrowd"]]
    assert len(crowds) == counts["crowd"] == 3
    for crowd in crowds:
        assert all(v == 0 for v in crowd["keypoints"])
        assert sum(crowd["segmentation"]["counts"]) == 240 * 320
        assert coco.annToMask(crowd).sum() == crowd["area"]
    multi = [a for a in person_anns(coco) if len(a["segmentation"]) > 1]
    assert len(multi) == counts["multi_polygon"] == 22


def test_some_figures_wear_black(dataset):
    """Pure black clothing or hair stays near black in the JPEG inside the person's mask."""
    out, _, coco = dataset
    n_black = 0
    for image in coco.dataset["images"]:
        picture = cv2.imread(str(out / "images" / SPLIT / image["file_name"]))
        for ann in coco.imgToAnns[image["id"]]:
            inside = picture[coco.annToMask(ann).astype(bool)]
            n_black += np.mean(inside.max(axis=1) <= 16) > 0.05
    assert n_black == 53


def test_poses_sizes_and_sides_vary(dataset):
    _, _, coco = dataset
    above, facing, heights = [], [], []
    for ann in person_anns(coco):
        kp = keypoint_array(ann)
        for shoulder, wrist in ((5, 9), (6, 10)):
            if kp[shoulder, 2] and kp[wrist, 2]:
                above.append(kp[wrist, 1] < kp[shoulder, 1])
        if kp[5, 2] and kp[6, 2]:
            facing.append(kp[5, 0] > kp[6, 0])  # the person's left is on the image right
        heights.append(ann["bbox"][3])
    assert 0.1 < np.mean(above) < 0.9
    assert np.mean(facing) > 0.95
    assert min(heights) < 60 and max(heights) > 180


def test_polygons_and_rle_round_trip_through_pycocotools():
    rng = np.random.default_rng(0)
    mask = np.zeros((50, 70), np.uint8)
    cv2.circle(mask, (20, 25), 9, 1, -1)
    cv2.line(mask, (35, 5), (65, 45), 1, 2)
    mask[0, 60:] = 1  # touches the border
    decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(sc.mask_to_polygons(mask), 50, 70)))
    assert np.array_equal(decoded, mask)
    noisy = (rng.random((50, 70)) < 0.4).astype(np.uint8)
    rle = sc.mask_to_rle(noisy)
    assert np.array_equal(mask_utils.decode(mask_utils.frPyObjects(rle, 50, 70)), noisy)


def test_command_line(tmp_path):
    script = os.path.join(ROOT, "synthetic_coco.py")
    help_text = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                               check=True).stdout
    for flag in ("--out", "--images", "--split", "--seed", "--size"):
        assert flag in help_text
    run = subprocess.run([sys.executable, script, "--out", str(tmp_path), "--images", "3",
                          "--split", "val2017", "--size", "200x150"],
                         capture_output=True, text=True, check=True)
    assert "wrote 3 images" in run.stdout and "persons:" in run.stdout
    with open(tmp_path / "annotations" / "person_keypoints_val2017.json") as f:
        data = json.load(f)
    assert [(i["width"], i["height"]) for i in data["images"]] == [(200, 150)] * 3
    bad = subprocess.run([sys.executable, script, "--out", str(tmp_path), "--size", "big"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "320x240" in bad.stderr
