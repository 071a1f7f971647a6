"""coco_process.py's rows of the bad-input table (tests/test_bad_inputs.py) and the folders they name.

A broken item inside the dataset (one bad annotation or image among good ones) is skipped,
counted in the sidecar and named in one stderr line, with exit status 0; `--strict` stops
at it instead. A row of status 0 must also keep every good figure of the base dataset but
its victims (VARIANTS), and count them in the sidecar (`check_after`).
"""
import json
import math
import re
import shutil

import cv2
import numpy as np

from bad_input_table import Case
from figure_pose.core.figures import open_figures, read_sidecar

OUT = "out.npy"  # the name of {out} in each row's folder
CP = "coco_process"
VICTIM_ANN, VICTIM_IMAGE = 8, 3  # a later annotation (not the first), and its image


def run(root, *extra):
    """argv of a quiet, single-process coco_process run of the fixture folder `root` into {out}."""
    return ["--coco-root", "{" + root + "}", "--out", "{out}", "--examples", "0", "--quiet", "--workers", "1",
            *extra]


# ----------------------------------------------------------------------------- broken datasets

def ann(data, ann_id=VICTIM_ANN):
    return next(a for a in data["annotations"] if isinstance(a, dict) and a.get("id") == ann_id)


def set_ann(key, value):
    def mutate(data, images):
        ann(data)[key] = value(ann(data)) if callable(value) else value
    return mutate


def del_ann(key):
    def mutate(data, images):
        del ann(data)[key]
    return mutate


def set_keypoint(index, value):
    def mutate(data, images):
        ann(data)["keypoints"][index] = value
    return mutate


def polygon_off_bbox(data, images):
    """Replace the victim's polygon by a small square in the image corner farthest from its bbox."""
    x, y, w, h = ann(data)["bbox"]
    cx = 0 if x + w / 2 > 160 else 310
    cy = 0 if y + h / 2 > 120 else 230
    ann(data)["segmentation"] = [[cx, cy, cx + 8, cy, cx + 8, cy + 8, cx, cy + 8]]


def rewrite_image(change):
    def mutate(data, images):
        path = images / f"{VICTIM_IMAGE:012d}.jpg"
        change(path)
    return mutate


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 6 // 10])


def resize(path):
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), (160, 120)))


def rotate(path):
    cv2.imwrite(str(path), cv2.rotate(cv2.imread(str(path)), cv2.ROTATE_90_CLOCKWISE))


def make_directory(path):
    path.unlink()
    path.mkdir()


def set_image(key, value):
    def mutate(data, images):
        entry = next(i for i in data["images"] if i["id"] == VICTIM_IMAGE)
        if value is None:
            del entry[key]
        else:
            entry[key] = value
    return mutate


def duplicate_id(data, images):
    ann(data, VICTIM_ANN + 1)["id"] = VICTIM_ANN


def replace_ann(value):
    def mutate(data, images):
        index = data["annotations"].index(ann(data))
        data["annotations"][index] = value
    return mutate


# name: (mutation of (json data, image folder), victims, counter key, count). victims: the
# base figures that must be gone ("image": those of VICTIM_IMAGE), the counter key counts them.
VARIANTS = {
    "no_keypoints": (del_ann("keypoints"), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "no_bbox": (del_ann("bbox"), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "keypoints_50": (set_ann("keypoints", lambda a: a["keypoints"][:50]), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "keypoints_string": (set_ann("keypoints", "none"), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "keypoint_nan": (set_keypoint(15, math.nan), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "visibility_3": (set_keypoint(17, 3), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "polygon_2_points": (set_ann("segmentation", [[10, 10, 50, 50]]), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "polygon_1_point": (set_ann("segmentation", [[10, 10]]), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "polygon_odd": (set_ann("segmentation", [[1, 2, 3, 4, 5, 6, 7]]), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "segmentation_string": (set_ann("segmentation", "person"), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "bbox_nan": (set_ann("bbox", lambda a: a["bbox"][:2] + [math.nan, a["bbox"][3]]), {VICTIM_ANN},
                 "skipped_bad_annotation", 1),
    "bbox_negative": (set_ann("bbox", lambda a: a["bbox"][:3] + [-a["bbox"][3]]), {VICTIM_ANN},
                      "skipped_bad_annotation", 1),
    "bbox_3_numbers": (set_ann("bbox", lambda a: a["bbox"][:3]), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "bbox_outside": (set_ann("bbox", lambda a: a["bbox"][:2] + [a["bbox"][2] + 300, a["bbox"][3]]), {VICTIM_ANN},
                     "skipped_bad_annotation", 1),
    "id_string": (set_ann("id", "eight"), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "iscrowd_string": (set_ann("iscrowd", "no"), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "not_an_object": (replace_ann(42), {VICTIM_ANN}, "skipped_bad_annotation", 1),
    "duplicate_id": (duplicate_id, {VICTIM_ANN, VICTIM_ANN + 1}, "skipped_duplicate_id", 2),
    "no_image_entry": (set_ann("image_id", 99), {VICTIM_ANN}, "skipped_no_image_entry", 1),
    "empty_figure": (polygon_off_bbox, {VICTIM_ANN}, "skipped_empty_figure", 1),
    "image_entry_no_width": (set_image("width", None), "image", "skipped_bad_image_entry", 3),
    "image_entry_file_name": (set_image("file_name", 7), "image", "skipped_bad_image_entry", 3),
    "image_truncated": (rewrite_image(truncate), "image", "skipped_image_unreadable", 3),
    "image_missing": (rewrite_image(lambda p: p.unlink()), "image", "skipped_image_unreadable", 3),
    "image_garbage": (rewrite_image(lambda p: p.write_bytes(b"not an image")), "image", "skipped_image_unreadable", 3),
    "image_folder": (rewrite_image(make_directory), "image", "skipped_image_unreadable", 3),
    "image_resized": (rewrite_image(resize), "image", "skipped_image_size_mismatch", 3),
    "image_rotated": (rewrite_image(rotate), "image", "skipped_image_size_mismatch", 3),
    "keypoint_outside": (set_ann("keypoints", lambda a: a["keypoints"][:15] + [-2000, -2000, 2] + a["keypoints"][18:]),
                         set(), "keypoints_far_outside", 1),
}

CASES = [
    # numeric and name flags: checked at parse time (status 2)
    Case("limit negative", CP, run("base", "--limit", "-1"), 2, r"argument --limit: must be an integer >= 0, not '-1'"),
    Case("size zero", CP, run("base", "--size", "0"), 2, r"argument --size: must be an integer in \[32, 2048\]"),
    Case("size not a number", CP, run("base", "--size", "big"), 2, r"argument --size: .*'big'"),
    Case("size not a multiple of the stride", CP, run("base", "--size", "322"), 2,
         r"--size 322 must be a multiple of --map-stride 4"),
    Case("map stride zero", CP, run("base", "--map-stride", "0"), 2, r"argument --map-stride: must be an integer in \[1, 64\]"),
    Case("workers zero", CP, run("base")[:-1] + ["0"], 2, r"argument --workers: must be an integer in \[1, 256\]"),
    Case("workers negative", CP, run("base")[:-1] + ["-3"], 2, r"argument --workers: .*'-3'"),
    Case("min-area NaN", CP, run("base", "--min-area", "nan"), 2, r"argument --min-area: must be a finite number >= 0"),
    Case("min-area negative", CP, run("base", "--min-area", "-5"), 2, r"argument --min-area: must be a finite number"),
    Case("checkpoint seconds infinite", CP, run("base", "--checkpoint-seconds", "inf"), 2,
         r"argument --checkpoint-seconds: must be a finite number >= 0"),
    Case("examples negative", CP, run("base", "--examples", "-1"), 2, r"argument --examples: must be an integer >= 0"),
    Case("min-keypoints negative", CP, run("base", "--min-keypoints", "-1"), 2,
         r"argument --min-keypoints: must be an integer in \[0, 17\]"),
    Case("min-keypoints above the joints", CP, run("base", "--min-keypoints", "14"), 2,
         r"--min-keypoints 14 is more than the 13 joints"),
    Case("split is a path", CP, run("base", "--split", "../x"), 2, r"argument --split: must be a split name"),
    # user mistakes and broken inputs as a whole (status 1)
    Case("coco-root missing", CP, ["--coco-root", "{tmp}/nowhere", "--out", "{out}"], 1,
         r"annotation file not found: .*nowhere"),
    Case("image folder missing", CP, run("no_image_folder"), 1, r"image folder not found: .*images/train2017"),
    Case("annotation JSON not JSON", CP, run("not_json"), 1, r"person_keypoints_train2017\.json is not JSON"),
    Case("annotation JSON nested too deeply", CP, run("deep_json"), 1, r"is not COCO JSON \(nested too deeply\)"),
    Case("annotations not a list", CP, run("annotations_dict"), 1,
         r"is not a COCO annotation file \(its annotations is not a list\)"),
    Case("images not a list", CP, run("images_null"), 1, r"is not a COCO annotation file \(its images is not a list\)"),
    Case("no annotation valid (an instances file)", CP, run("instances"), 1,
         r"is not a COCO keypoint file: no annotation is valid \(the first: no keypoints\)"),
    Case("no annotations at all", CP, run("no_annotations"), 1, r"no figures to write: .*json has no annotations$"),
    Case("every person filtered out", CP, run("base", "--min-area", "1e9"), 1,
         r"no figures to write: all 12 annotations of .* were skipped \(.*too_small \d+\)"),
    Case("every image broken", CP, run("all_images_broken"), 1,
         r"no figures written: every image .* skipped \(image_unreadable 9, .*; first: image 0+1\.jpg: not an image"),
    Case("out directory missing", CP, run("base")[:3] + ["{tmp}/no/such/x.npy"] + run("base")[4:], 1,
         r"cannot write --out .*x\.npy: directory .* does not exist", ("{tmp}/no",)),
    Case("out is a directory", CP, run("base")[:3] + ["{tmp}"] + run("base")[4:], 1, r"cannot write --out .*: .* is a directory",
         ()),
    Case("out is the annotation file", CP, run("base")[:3] + ["{base_json}"] + run("base")[4:], 1,
         r"--out .*person_keypoints_train2017\.json is the annotation file it reads", ("{base_json}.partial",)),
    Case("examples dir is a file", CP, run("base", "--examples", "2", "--examples-dir", "{a_file}/pictures"), 1,
         r"cannot write examples to --examples-dir .*a_file/pictures: .*a_file is not a directory"),
    Case("resume from a truncated progress file", CP, run("base")[:3] + ["{resume_out}", "--resume"] + run("base")[4:], 1,
         r"cannot --resume: .*coco\.npy\.partial\.json is damaged \(not JSON", ("{resume_out}",)),
    # --strict: the first broken item stops the run (status 1)
    Case("strict: broken annotation", CP, run("keypoints_50", "--strict"), 1,
         r"annotation 8: keypoints are not 51 finite numbers .*\(stopped by --strict\)$", ("{out}", "{out}.partial")),
    Case("strict: duplicate id", CP, run("duplicate_id", "--strict"), 1,
         r"annotation 8: its id is used by 2 annotations \(stopped by --strict\)$"),
    Case("strict: truncated image", CP, run("image_truncated", "--strict"), 1,
         r"image 0+3\.jpg: truncated JPEG \(no end-of-image marker\) \(stopped by --strict\)$"),
    Case("strict: resized image", CP, run("image_resized", "--strict"), 1,
         r"image 0+3\.jpg: decodes to 160x120, the JSON says 320x240 \(stopped by --strict\)$"),
    # broken items inside the dataset: skipped, counted and named (status 0)
    Case("later annotation without keypoints", CP, run("no_keypoints"), 0, r"skipped annotation 8: no keypoints$", ()),
    Case("later annotation without bbox", CP, run("no_bbox"), 0, r"skipped annotation 8: no bbox$", ()),
    Case("keypoints of the wrong length", CP, run("keypoints_50"), 0,
         r"skipped annotation 8: keypoints are not 51 finite numbers", ()),
    Case("keypoints a string", CP, run("keypoints_string"), 0, r"skipped annotation 8: keypoints are not 51", ()),
    Case("keypoint NaN", CP, run("keypoint_nan"), 0, r"skipped annotation 8: keypoints are not 51 finite numbers", ()),
    Case("keypoint visibility 3", CP, run("visibility_3"), 0, r"skipped annotation 8: a keypoint visibility is not 0, 1 or 2",
         ()),
    Case("polygon of 2 points", CP, run("polygon_2_points"), 0,
         r"skipped annotation 8: a segmentation polygon has fewer than 3 points$", ()),
    Case("polygon of 1 point", CP, run("polygon_1_point"), 0, r"skipped annotation 8: .*fewer than 3 points$", ()),
    Case("polygon of odd length", CP, run("polygon_odd"), 0, r"skipped annotation 8: .*polygon is not a list of x, y", ()),
    Case("segmentation a string", CP, run("segmentation_string"), 0,
         r"skipped annotation 8: segmentation is neither polygons nor RLE$", ()),
    Case("bbox NaN width", CP, run("bbox_nan"), 0, r"skipped annotation 8: bbox .*nan.* is not 4 finite numbers$", ()),
    Case("bbox negative height", CP, run("bbox_negative"), 0, r"skipped annotation 8: bbox .* has a width or height <= 0$",
         ()),
    Case("bbox of 3 numbers", CP, run("bbox_3_numbers"), 0, r"skipped annotation 8: bbox .* is not 4 finite numbers$", ()),
    Case("bbox outside the image", CP, run("bbox_outside"), 0,
         r"skipped annotation 8: bbox .* reaches outside the 320x240 image$", ()),
    Case("annotation id a string", CP, run("id_string"), 0,
         r"skipped annotations\[7\]: id 'eight' is not a non-negative integer$", ()),
    Case("iscrowd a string", CP, run("iscrowd_string"), 0, r"skipped annotation 8: iscrowd 'no' is not 0 or 1$", ()),
    Case("annotation not an object", CP, run("not_an_object"), 0, r"skipped annotations\[7\]: not a JSON object$", ()),
    Case("duplicate annotation id", CP, run("duplicate_id"), 0,
         r"skipped annotation 8: its id is used by 2 annotations$", ()),
    Case("annotation of no image entry", CP, run("no_image_entry"), 0,
         r"skipped annotation 8: image 99 has no entry in images$", ()),
    Case("polygon and bbox share no pixel", CP, run("empty_figure"), 0,
         r"skipped annotation 8: its polygons and bbox share no pixel of image 0+3\.jpg$", ()),
    Case("image entry without width", CP, run("image_entry_no_width"), 0, r"skipped image 3: no width$", ()),
    Case("image entry file name a number", CP, run("image_entry_file_name"), 0,
         r"skipped image 3: file_name 7 is not a file name$", ()),
    Case("truncated JPEG", CP, run("image_truncated"), 0,
         r"skipped image 0+3\.jpg: truncated JPEG \(no end-of-image marker\)$", ()),
    Case("image file missing", CP, run("image_missing"), 0, r"skipped image 0+3\.jpg: file not found$", ()),
    Case("image file garbage", CP, run("image_garbage"), 0, r"skipped image 0+3\.jpg: not an image OpenCV can decode$",
         ()),
    Case("image file a folder", CP, run("image_folder"), 0, r"skipped image 0+3\.jpg: cannot read it \(Is a directory\)$",
         ()),
    Case("image resized", CP, run("image_resized"), 0,
         r"skipped image 0+3\.jpg: decodes to 160x120, the JSON says 320x240$", ()),
    Case("image rotated", CP, run("image_rotated"), 0,
         r"skipped image 0+3\.jpg: decodes to 240x320, the JSON says 320x240$", ()),
    Case("keypoint far outside the figure", CP, run("keypoint_outside"), 0,
         r"note: labelled keypoints too far outside their figure's canvas to have a map, stored as unlabelled: 1$", ()),
]


# ----------------------------------------------------------------------------- inputs

def build_inputs(tmp):
    """Every folder and file the rows name, under tmp: {placeholder: path}, plus "variants":
    {variant: (victims, counter key, count)}, "base_ids" (the annotation ids of the good dataset)
    and "base_npy" (its figures)."""
    from synthetic_coco import make_synthetic_coco
    import coco_process
    base = tmp / "base"
    make_synthetic_coco(str(base), n_images=5, seed=1)
    json_path = base / "annotations" / "person_keypoints_train2017.json"
    data = json.loads(json_path.read_text())
    paths = {"base": base, "base_json": json_path}

    coco_process.main(["--coco-root", str(base), "--out", str(tmp / "base.npy"), "--examples", "0", "--quiet",
                       "--workers", "1"])
    figures = open_figures(str(tmp / "base.npy"))
    base_ids = set(figures["annotation_id"].tolist())
    image_victims = set(figures["annotation_id"][figures["image_id"] == VICTIM_IMAGE].tolist())
    assert VICTIM_ANN in base_ids and VICTIM_ANN + 1 in base_ids and len(image_victims) == 3
    assert data["annotations"][0]["id"] != VICTIM_ANN  # the victim is a later annotation

    def variant(name, mutate=None, text=None):
        root = tmp / name
        shutil.copytree(base, root)
        copy = json.loads(json.dumps(data))
        if mutate:
            mutate(copy, root / "images" / "train2017")
        (root / "annotations" / "person_keypoints_train2017.json").write_text(text or json.dumps(copy))
        paths[name] = root
        return root

    meta = {}
    for name, (mutate, victims, key, n) in VARIANTS.items():
        variant(name, mutate)
        meta[name] = (image_victims if victims == "image" else victims, key, n)
    shutil.rmtree(variant("no_image_folder") / "images")
    variant("not_json", text='{"images": [')
    variant("deep_json", text="[" * 100_000 + "]" * 100_000)
    variant("annotations_dict", text=json.dumps(dict(data, annotations={"1": data["annotations"][0]})))
    variant("images_null", text=json.dumps(dict(data, images=None)))
    variant("no_annotations", text=json.dumps(dict(data, annotations=[])))
    variant("instances", text=json.dumps(dict(data, annotations=[{k: v for k, v in a.items() if k != "keypoints"}
                                                                 for a in data["annotations"]])))
    broken = variant("all_images_broken")
    for image in (broken / "images" / "train2017").iterdir():
        image.write_bytes(b"not an image")
    paths["a_file"] = tmp / "a_file"
    paths["a_file"].write_text("x\n")
    resume = tmp / "resume"
    resume.mkdir()
    paths["resume_out"] = resume / "coco.npy"
    (resume / "coco.npy.partial").write_bytes(b"\0" * 8192)
    (resume / "coco.npy.partial.json").write_text('{"settings": {"joint_names": ["nose", "left_sh')
    return {**{k: str(v) for k, v in paths.items()}, "variants": meta, "base_ids": base_ids,
            "base_npy": str(tmp / "base.npy")}


# ----------------------------------------------------------------------------- checks after a row

def check_after(case, argv, stdout, inputs):
    """A skip row: every good figure but the victims written, the victims counted in sidecar and summary."""
    if case.status != 0:
        return
    variant = next(a[1:-1] for a in case.argv if a[1:-1] in inputs["variants"])
    victims, key, n = inputs["variants"][variant]
    out = argv[argv.index("--out") + 1]
    figures = open_figures(out)
    assert set(figures["annotation_id"].tolist()) == inputs["base_ids"] - victims
    sidecar = read_sidecar(out)
    assert sidecar["counts"][key] == n and sidecar["figures"] == len(figures)
    assert len(sidecar["problems"]) == (key != "keypoints_far_outside")
    if key.startswith("skipped_"):
        assert re.search(rf"skipped {key[8:]} *: {n}$", stdout, re.M), stdout
    else:
        assert not np.isnan(figures["keypoints"]).any()
    if variant == "keypoint_outside":
        check_keypoint_outside_is_unlabelled(figures, open_figures(inputs["base_npy"]))


def check_keypoint_outside_is_unlabelled(figures, base):
    """The far-outside left shoulder of the victim is stored as (0, 0, 0) with an empty map; the
    rest of its record is the base run's (its other 12 joints labelled, as all 13 were there)."""
    record = figures[figures["annotation_id"] == VICTIM_ANN][0]
    before = base[base["annotation_id"] == VICTIM_ANN][0]
    shoulder = 1  # left_shoulder among the 13 joints (nose first)
    assert (record["keypoints"][shoulder] == 0).all() and (record["confidence_maps"][..., shoulder] == 0).all()
    assert before["keypoints"][shoulder, 2] == 2 and (before["confidence_maps"][..., shoulder] > 0).any()
    others = np.arange(13) != shoulder
    np.testing.assert_array_equal(record["keypoints"][others], before["keypoints"][others])
    np.testing.assert_array_equal(record["confidence_maps"][..., others], before["confidence_maps"][..., others])
    assert record["figure"].tobytes() == before["figure"].tobytes()
    assert (record["keypoints"][:, 2] > 0).sum() == 12
