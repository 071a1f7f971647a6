"""evaluate.py's rows of the bad-input table (tests/test_bad_inputs.py) and the files they name.

Placeholders: {tmp}, {out} (a folder that does not exist yet) and every key of `build_inputs`.
"""
import json
import shutil
import zipfile

import numpy as np

from bad_input_table import Case, write

OUT = "out"  # the name of {out} in each row's folder
EV = "evaluate"
IMAGES = ["--model", "{model}", "--images", "{photo}", "--quiet"]
EVAL = ["--oracle", "--data", "{data}", "--quiet", "--pictures", "0"]

CASES = [
    # --model
    Case("model missing", EV, ["--model", "{tmp}/nope.keras", "--data", "{data}", "--out", "{out}"], 1,
         r"model file not found: .*nope\.keras"),
    Case("model is text", EV, ["--model", "{notes_keras}", "--data", "{data}", "--out", "{out}"], 1,
         r"notes\.keras is not a figure-pose model"),
    Case("model is a foreign zip", EV, ["--model", "{foreign_keras}", "--images", "{photo}", "--out", "{out}"], 1,
         r"foreign\.keras is not a figure-pose model"),
    Case("model is a folder", EV, ["--model", "{photos}", "--export", "tflite", "--out", "{out}"], 1,
         r"photos is not an exported figure-pose model \(a \.tflite file, a SavedModel folder"),
    Case("model of 5 joints, --images", EV, ["--model", "{model5}", "--images", "{photo}", "--out", "{out}"], 1,
         r"--model .*model5\.keras predicts 5 joints; figure-pose models predict 13 or 17"),
    Case("model of 5 joints, --export", EV, ["--model", "{model5}", "--export", "saved_model", "--out", "{out}"],
         1, r"--model .*predicts 5 joints"),
    Case("model of 5 joints, --data", EV, ["--model", "{model5}", "--data", "{data}", "--out", "{out}"], 1,
         r"--model .*predicts 5 joints"),
    Case("model of 13 joints, --data of 17", EV, ["--model", "{model}", "--data", "{data17}", "--out", "{out}"],
         1, r"--model .* predicts 13 joints but --data .*coco17\.npy has 17"),
    Case("--oracle with --model", EV, ["--oracle", "--model", "{model}", "--data", "{data}", "--out", "{out}"], 2,
         r"--oracle evaluates the stored maps: give no --model"),
    Case("model with a NaN weight, --data", EV, ["--model", "{nan_model}", "--data", "{data}", "--out", "{out}"], 1,
         r"nan_model\.keras holds NaN or infinite weights \(1 of \d+ variables, first .*kernel\): the run that "
         r"saved it diverged"),
    Case("model with a NaN weight, --images", EV, ["--model", "{nan_model}", "--images", "{photo}", "--out", "{out}"],
         1, r"nan_model\.keras holds NaN or infinite weights"),
    Case("model with a NaN weight, --export", EV, ["--model", "{nan_model}", "--export", "tflite", "--out", "{out}"],
         1, r"nan_model\.keras holds NaN or infinite weights"),
    Case("model whose maps overflow, --data", EV, ["--model", "{overflow_model}", "--data", "{data}", "--pictures", "0",
                                                 "--quiet", "--out", "{out}"], 1,
         r"--model predicts NaN or infinite maps for \d+ of \d+ figures: it overflows", ("{out}/metrics.json",)),
    Case("model whose maps overflow, --images", EV, IMAGES[:1] + ["{overflow_model}"] + IMAGES[2:] + ["--out", "{out}"],
         1, r"--model predicts NaN or infinite maps for 1 of 1 figures", ("{out}/predictions.json",)),
    # --data / --train-data
    Case("data missing", EV, EVAL[:2] + ["{tmp}/none.npy", "--out", "{out}"], 1, r"--data .*none\.npy not found"),
    Case("data is an empty file", EV, ["--oracle", "--data", "{empty_file}", "--out", "{out}"], 1,
         r"--data .*empty\.npy is not a figure file"),
    Case("data is a folder", EV, ["--oracle", "--data", "{photos}", "--out", "{out}"], 1,
         r"--data .*photos is a folder, not a figure file"),
    Case("data is an .npz", EV, ["--oracle", "--data", "{npz}", "--out", "{out}"], 1, r"an \.npz archive"),
    Case("data truncated", EV, ["--oracle", "--data", "{truncated_npy}", "--out", "{out}"], 1,
         r"--data .*truncated\.npy is not a figure file"),
    Case("data's sidecar is not JSON", EV, EVAL[:2] + ["{bad_sidecar_npy}", "--out", "{out}"], 1,
         r"sidecar of --data .*give --split"),
    Case("train-data of other joints", EV, EVAL + ["--train-data", "{data17}", "--out", "{out}"], 1,
         r"--train-data .*coco17\.npy has 17 joints, --data .* 13"),
    Case("train-data missing", EV, EVAL + ["--train-data", "{tmp}/none.npy", "--out", "{out}"], 1,
         r"--train-data .*none\.npy not found"),
    # evaluation flags
    Case("limit negative", EV, EVAL + ["--limit", "-1", "--out", "{out}"], 2, r"argument --limit: must be an integer >= 1"),
    Case("limit zero", EV, EVAL + ["--limit", "0", "--out", "{out}"], 2, r"argument --limit: must be an integer >= 1"),
    Case("limit not a number", EV, EVAL + ["--limit", "ten", "--out", "{out}"], 2, r"argument --limit: .*'ten'"),
    Case("pictures negative", EV, EVAL[:3] + ["--pictures", "-3", "--out", "{out}"], 2,
         r"argument --pictures: must be an integer >= 0"),
    Case("batch size zero", EV, EVAL + ["--batch-size", "0", "--out", "{out}"], 2, r"argument --batch-size: .*>= 1"),
    Case("image ids empty", EV, EVAL + ["--image-ids", ",", "--out", "{out}"], 2, r"argument --image-ids: .*at least one"),
    Case("image ids not numbers", EV, EVAL + ["--image-ids", "1,x", "--out", "{out}"], 2, r"argument --image-ids"),
    Case("image ids match nothing", EV, EVAL + ["--image-ids", "999999", "--out", "{out}"], 1, r"empty selection"),
    Case("split is a path", EV, EVAL + ["--split", "../x", "--out", "{out}"], 2, r"argument --split: must be a split name"),
    Case("split without annotations", EV, EVAL + ["--coco-root", "{coco_root}", "--split", "val1999", "--out", "{out}"],
         1, r"person_keypoints_val1999\.json.*check --coco-root and --split"),
    Case("coco-root missing", EV, EVAL + ["--coco-root", "{tmp}/nowhere", "--out", "{out}"], 1,
         r"annotation file not found: .*nowhere"),
    Case("coco-root annotations without area", EV,
         EVAL + ["--coco-root", "{coco_root_no_area}", "--split", "train2017", "--out", "{out}"], 1,
         r"annotation \d+ of the --coco-root annotation file: no numeric area"),
    Case("data flags with --images", EV, IMAGES + ["--data", "{data}", "--out", "{out}"], 2,
         r"--data: only for evaluation"),
    Case("--bbox without --images", EV, EVAL + ["--bbox", "1,2,3,4", "--out", "{out}"], 2, r"give --images"),
    Case("--images and --export", EV, IMAGES + ["--export", "tflite", "--out", "{out}"], 2, r"choose one of"),
    # --out
    Case("out is a file (evaluation)", EV, EVAL + ["--out", "{a_file}"], 1, r"--out .*a_file is a file, not a folder", ()),
    Case("out is a file (--images)", EV, IMAGES + ["--out", "{a_file}"], 1, r"a_file is a file, not a folder", ()),
    Case("out is a file (--export)", EV, ["--model", "{model}", "--export", "saved_model", "--out", "{a_file}"], 1,
         r"a_file is a file, not a folder", ()),
    Case("out under a file (--export)", EV, ["--model", "{model}", "--export", "tflite", "--out", "{a_file}/sub"], 1,
         r"--out .*a_file/sub: .*a_file is a file", ()),
    Case("out cannot be created (--export)", EV, ["--model", "{model}", "--export", "tflite", "--out", "/proc/no/out"],
         1, r"--out /proc/no/out", ("/proc/no/out",)),
    # --images
    Case("images missing", EV, ["--model", "{model}", "--images", "{tmp}/gone.jpg", "--out", "{out}"], 1,
         r"no such file or folder: .*gone\.jpg"),
    Case("images: empty folder", EV, ["--model", "{model}", "--images", "{empty_folder}", "--out", "{out}"], 1,
         r"no image files in .*empty_folder"),
    Case("images: no image files", EV, ["--model", "{model}", "--images", "{text_folder}", "--out", "{out}"], 1,
         r"no image files in .*text_folder"),
    Case("images: only unreadable", EV, IMAGES[:3] + ["{broken}", "--quiet", "--out", "{out}"], 1,
         r"none of the 1 images could be read.*broken\.jpg: unreadable"),
    Case("images: one unreadable among good", EV, IMAGES[:3] + ["{photos}", "--quiet", "--out", "{out}"], 0,
         r"^evaluate\.py: skipped .*broken\.jpg: unreadable$", ()),
    Case("bbox letters", EV, IMAGES + ["--bbox", "a,b,c,d", "--out", "{out}"], 2, r"argument --bbox: must be x,y,w,h"),
    Case("bbox of three numbers", EV, IMAGES + ["--bbox", "1,2,3", "--out", "{out}"], 2, r"argument --bbox"),
    Case("bbox of zero size", EV, IMAGES + ["--bbox", "10,10,0,20", "--out", "{out}"], 2, r"argument --bbox: .*w, h > 0"),
    Case("bbox of negative size", EV, IMAGES + ["--bbox", "10,10,-5,20", "--out", "{out}"], 2, r"argument --bbox"),
    Case("bbox not finite", EV, IMAGES + ["--bbox", "nan,0,10,inf", "--out", "{out}"], 2, r"argument --bbox: .*finite"),
    Case("bbox outside the image", EV, IMAGES + ["--bbox", "5000,5000,10,10", "--out", "{out}"], 1,
         r"--bbox: box lies outside the 320x240 image"),
    Case("bbox outside one of two images", EV, IMAGES[:3] + ["{photo}", "{small_png}", "--quiet", "--bbox",
                                                             "60,60,100,100", "--out", "{out}"], 0,
         r"^evaluate\.py: skipped .*small\.png: --bbox: box lies outside the 40x50 image$", ()),
    Case("min-confidence nan", EV, IMAGES + ["--min-confidence", "nan", "--out", "{out}"], 2,
         r"argument --min-confidence: must be a finite number in \[0, 1\]"),
    Case("min-confidence above 1", EV, IMAGES + ["--min-confidence", "2", "--out", "{out}"], 2,
         r"argument --min-confidence"),
    Case("annotations missing", EV, IMAGES + ["--annotations", "{tmp}/none.json", "--out", "{out}"], 1,
         r"cannot read --annotations .*none\.json"),
    Case("annotations not JSON", EV, IMAGES + ["--annotations", "{ann_not_json}", "--out", "{out}"], 1,
         r"--annotations .* is not JSON"),
    Case("annotations a list", EV, IMAGES + ["--annotations", "{ann_list}", "--out", "{out}"], 1,
         r"--annotations .*: row 1 is not file,x,y,w,h"),
    Case("annotations an object", EV, IMAGES + ["--annotations", "{ann_no_lists}", "--out", "{out}"], 1,
         r"is neither COCO format .* nor a list of \{file, x, y, w, h\}"),
    Case("annotations: image without file_name", EV, IMAGES + ["--annotations", "{ann_no_file_name}", "--out", "{out}"],
         1, r"images\[0\] needs an id and a file_name"),
    Case("annotations: no image_id", EV, IMAGES + ["--annotations", "{ann_no_image_id}", "--out", "{out}"], 1,
         r"annotation 7 has no image_id"),
    Case("annotations: bbox of 3", EV, IMAGES + ["--annotations", "{ann_short_bbox}", "--out", "{out}"], 1,
         r"annotation 7 has no bbox of 4 numbers"),
    Case("annotations: bad segmentation", EV, IMAGES + ["--annotations", "{ann_bad_segmentation}", "--out", "{out}"],
         1, r"annotation 7 has a segmentation that is neither polygons"),
    Case("annotations: box outside the image", EV, IMAGES + ["--annotations", "{ann_outside}", "--out", "{out}"], 1,
         r"annotation 7: box lies outside the 320x240 image"),
]


def build_inputs(tmp):
    """Every file the rows name, made once: {placeholder: path}."""
    paths = build_data(tmp)
    paths.update(build_models(tmp))
    paths.update(build_photos(tmp, paths["coco_root"]))
    paths.update(build_box_annotations(tmp))
    return {k: str(v) for k, v in paths.items()}


def build_data(tmp):
    """A 6-image synthetic COCO sample, its figures (13 and 17 joints) and broken variants of both,
    made in this process (synthetic_coco.make_synthetic_coco, coco_process.main)."""
    import coco_process
    from synthetic_coco import make_synthetic_coco
    root = tmp / "coco"
    make_synthetic_coco(str(root), n_images=6, split="train2017", seed=3)
    paths = {"coco_root": root, "data": tmp / "coco.npy", "data17": tmp / "coco17.npy"}
    for name, joints in (("data", 13), ("data17", 17)):
        coco_process.main(["--coco-root", str(root), "--out", str(paths[name]), "--examples", "0", "--quiet",
                           "--workers", "1", "--joints", str(joints)])
    paths["empty_file"] = write(tmp / "empty.npy", "")
    paths["a_file"] = write(tmp / "a_file", "x\n")
    paths["npz"] = tmp / "figures.npz"
    np.savez(paths["npz"], a=np.zeros(3))
    paths["truncated_npy"] = tmp / "truncated.npy"
    paths["truncated_npy"].write_bytes(paths["data"].read_bytes()[:100_000])
    paths["bad_sidecar_npy"] = tmp / "bad_sidecar.npy"
    shutil.copy(paths["data"], paths["bad_sidecar_npy"])
    write(tmp / "bad_sidecar.npy.json", "{oops")
    annotations = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    for ann in annotations["annotations"]:
        del ann["area"]
    paths["coco_root_no_area"] = tmp / "coco_no_area"
    write(paths["coco_root_no_area"] / "annotations" / "person_keypoints_train2017.json", json.dumps(annotations))
    return paths


def build_models(tmp):
    """A tiny model of ours, a model of 5 joints, a text file and a foreign zip named .keras."""
    from figure_pose.evaluation.inference import import_network
    network = import_network()
    paths = {"model": tmp / "tiny.keras", "model5": tmp / "model5.keras"}
    network.build_model(size=96, width=0.25).save(paths["model"])
    import keras
    image = keras.Input((96, 96, 3))
    keras.Model(image, keras.layers.Conv2D(5, 1, strides=4)(image)).save(paths["model5"])
    weights = network.build_model(size=96, width=0.25).get_weights()
    for name, first_kernel in (("nan_model", np.where(np.arange(weights[0].size) == 5, np.nan, weights[0].ravel())),
                               ("overflow_model", np.full(weights[0].size, 3e38))):  # finite, but its maps are not
        model = network.build_model(size=96, width=0.25)
        model.set_weights([first_kernel.reshape(weights[0].shape).astype("float32"), *weights[1:]])
        paths[name] = tmp / f"{name}.keras"
        model.save(paths[name])
    paths["notes_keras"] = write(tmp / "notes.keras", "not a model\n")
    paths["foreign_keras"] = tmp / "foreign.keras"
    with zipfile.ZipFile(paths["foreign_keras"], "w") as z:
        z.writestr("config.json", json.dumps({"class_name": "Nothing"}))
    return paths


def build_photos(tmp, root):
    """A folder of one photo and one broken file, a small PNG, an empty folder, a folder without images."""
    import cv2
    photos = tmp / "photos"
    photos.mkdir()
    paths = {"photos": photos, "photo": photos / "000000000001.jpg"}
    shutil.copy(root / "images" / "train2017" / "000000000001.jpg", paths["photo"])
    paths["broken"] = write(photos / "broken.jpg", "garbage")
    paths["small_png"] = tmp / "small.png"
    cv2.imwrite(str(paths["small_png"]), np.full((50, 40, 3), 100, np.uint8))
    paths["empty_folder"] = tmp / "empty_folder"
    paths["empty_folder"].mkdir()
    paths["text_folder"] = tmp / "text_folder"
    write(paths["text_folder"] / "readme.txt", "no images here\n")
    return paths


def build_box_annotations(tmp):
    """--annotations files, each broken in one way."""
    image_entry = {"id": 1, "file_name": "000000000001.jpg"}
    good = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 80, 150]}
    paths = {}
    for name, data in (("ann_list", [1, 2]), ("ann_no_lists", {"images": 3}),
                       ("ann_no_file_name", {"images": [{"id": 1}], "annotations": [good]}),
                       ("ann_no_image_id", {"images": [image_entry],
                                            "annotations": [{k: v for k, v in good.items() if k != "image_id"}]}),
                       ("ann_short_bbox", {"images": [image_entry], "annotations": [dict(good, bbox=[1, 2, 3])]}),
                       ("ann_bad_segmentation", {"images": [image_entry],
                                                 "annotations": [dict(good, segmentation="person")]}),
                       ("ann_outside", {"images": [image_entry],
                                        "annotations": [dict(good, bbox=[900, 900, 10, 10])]})):
        paths[name] = write(tmp / f"{name}.json", json.dumps(data))
    paths["ann_not_json"] = write(tmp / "ann_not_json.json", "{not json")
    return paths
