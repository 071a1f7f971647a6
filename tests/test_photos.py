"""evaluate.py --images (photos.py): folders, boxes from --bbox, a CSV or a JSON list, COCO
--annotations whose person masks are polygons or RLE, overlays and predictions.json."""
import json

import numpy as np
import pytest

import evaluate_fixtures
from evaluate_fixtures import evaluate_main, one_line_error

synthetic = evaluate_fixtures.synthetic
tiny_model = evaluate_fixtures.tiny_model


def test_images_folder_with_an_unreadable_file(tiny_model, synthetic, tmp_path, capsys):
    """A folder of two photos and a broken file, one --bbox: two overlays, the broken file named."""
    from figure_pose.core.figures import joint_names
    names = joint_names(13)
    root, _ = synthetic
    folder = tmp_path / "photos"
    folder.mkdir()
    images = sorted((root / "images" / "train2017").glob("*.jpg"))[:2]
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "broken.jpg").write_bytes(b"garbage")
    out = tmp_path / "inference"
    status, stdout, stderr = evaluate_main(["--model", tiny_model, "--images", folder, "--out", out, "--bbox",
                                            "20,10,100,200", "--quiet"], capsys)
    assert status == 0, stderr
    assert "1 unreadable" in stdout and stderr.strip() == f"evaluate.py: skipped {folder / 'broken.jpg'}: unreadable"
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions["images"]) == 2 and predictions["unreadable"] == [str(folder / "broken.jpg")]
    for entry in predictions["images"]:
        assert (out / entry["overlay"]).exists()
        (figure,) = entry["figures"]
        assert figure["bbox"] == [20, 10, 100, 200] and figure["crop"] == "--bbox" and not figure["masked"]
        assert list(figure["keypoints"]) == predictions["joint_names"] == list(names)
        xy = np.array([v[:2] for v in figure["keypoints"].values()])
        # the canvas covers the bbox centre +- 0.7 x its side (frame of side / 5): keypoints lie in it
        centre, half = np.array([70.0, 110.0]), 0.7 * 200 + 2
        assert np.all(np.abs(xy - centre) <= half)
    assert "could be read" in one_line_error(
        *evaluate_main(["--model", tiny_model, "--images", folder / "broken.jpg", "--out", tmp_path / "o2",
                        "--quiet"], capsys)[::2])


def test_photo_set_boxes_from_csv_and_json_no_silent_overwrite(tiny_model, synthetic, tmp_path, capsys):
    """Boxes per image from a CSV or a JSON list (two boxes on one photo: two figures); overlays draw
    the box; a second run into the same --out is refused without --overwrite; unmasked crops are noted."""
    import cv2

    import evaluate
    root, _ = synthetic
    images = sorted((root / "images" / "train2017").glob("*.jpg"))[:2]
    (tmp_path / "boxes.csv").write_text(f"file,x,y,w,h\n{images[0].name},10,12,60,90\n"
                                        f"{images[0].name},40,20,50,70\n{images[1].name},5,5,80,100\n")
    (tmp_path / "boxes.json").write_text(json.dumps([{"file": images[1].name, "x": 5, "y": 5, "w": 80, "h": 100}]))
    out = tmp_path / "preds"
    argv = ["--model", str(tiny_model), "--images", *map(str, images), "--out", str(out), "--quiet"]
    evaluate.main(argv + ["--annotations", str(tmp_path / "boxes.csv")])
    printed = capsys.readouterr().out
    predictions = json.loads((out / "predictions.json").read_text())
    assert [len(e["figures"]) for e in predictions["images"]] == [2, 1]
    assert predictions["images"][0]["figures"][1]["bbox"] == [40, 20, 50, 70]
    assert "note: figures without a person mask: 3;" in printed
    overlay = cv2.cvtColor(cv2.imread(str(out / predictions["images"][1]["overlay"])), cv2.COLOR_BGR2RGB)
    edge = overlay[30:80, 5].astype(int)                      # the box's left edge, x = 5: yellow
    assert (np.abs(edge - [255, 210, 0]).sum(-1) < 90).mean() > 0.5
    with pytest.raises(SystemExit, match="holds the predictions.json of an earlier run"):
        evaluate.main(argv + ["--annotations", str(tmp_path / "boxes.json")])
    evaluate.main(argv + ["--annotations", str(tmp_path / "boxes.json"), "--overwrite"])
    predictions = json.loads((out / "predictions.json").read_text())
    assert [len(e["figures"]) for e in predictions["images"]] == [1, 1]   # no box for images[0]: whole image
    assert predictions["images"][0]["figures"][0]["crop"] == "whole image"
    (tmp_path / "bad.csv").write_text(f"{images[0].name},1,2,0,5\n")
    with pytest.raises(SystemExit, match=r"row 1 is not file,x,y,w,h"):
        evaluate.main(argv[:-3] + ["--out", str(tmp_path / "o"), "--annotations", str(tmp_path / "bad.csv")])


# ----------------------------------------------------------------------------- --annotations with person masks

def uncompressed_rle(mask):
    """COCO's uncompressed RLE counts of a 0/1 mask: run lengths in column-major order, zeros first."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] if flat[0] else []) + runs


@pytest.fixture(scope="module")
def masked_person(synthetic, tmp_path_factory):
    """(photo, bbox, mask, {kind: --annotations file}) for one synthetic person whose segmentation is
    written as polygons (as annotated), compressed RLE (pycocotools.mask.encode) and uncompressed RLE."""
    from pycocotools import mask as mask_utils

    from figure_pose.data.coco_io import person_mask
    root, _ = synthetic
    data = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    ann = next(a for a in data["annotations"] if not a["iscrowd"] and len(a["segmentation"]) == 1)
    image = next(im for im in data["images"] if im["id"] == ann["image_id"])
    mask = person_mask(ann, image["height"], image["width"])
    compressed = mask_utils.encode(np.asfortranarray(mask))
    segmentations = {"polygons": ann["segmentation"],
                     "rle": {"size": compressed["size"], "counts": compressed["counts"].decode()},
                     "uncompressed rle": {"size": [image["height"], image["width"]], "counts": uncompressed_rle(mask)}}
    folder = tmp_path_factory.mktemp("masks")
    files = {}
    for kind, segmentation in segmentations.items():
        files[kind] = folder / f"{kind.replace(' ', '_')}.json"
        files[kind].write_text(json.dumps({"images": [image], "annotations": [dict(ann, segmentation=segmentation)]}))
    x, y, w, h = ann["bbox"]
    files["csv"] = folder / "boxes.csv"
    files["csv"].write_text(f"file,x,y,w,h\n{image['file_name']},{x},{y},{w},{h}\n")
    return root / "images" / "train2017" / image["file_name"], ann["bbox"], mask, files


def test_annotation_masks_decode_the_same_from_polygons_and_rle(masked_person):
    from figure_pose.data.coco_io import read_image
    from figure_pose.evaluation.photos import crops_for, load_box_annotations
    photo, bbox, mask, files = masked_person
    image, _ = read_image(str(photo))
    assert 500 < mask.sum() < bbox[2] * bbox[3]          # a person, not its whole box
    for kind in ("polygons", "rle", "uncompressed rle"):
        boxes = load_box_annotations(str(files[kind]))
        ((crop_bbox, crop_mask, source),), skipped = crops_for(image, photo.name, None, boxes)
        assert skipped == [] and source == "annotation" and crop_bbox == bbox
        np.testing.assert_array_equal(crop_mask, mask, err_msg=kind)
    ((_, no_mask, _),), _ = crops_for(image, photo.name, None, load_box_annotations(str(files["csv"])))
    assert no_mask is None


def test_images_with_masked_annotations(tiny_model, masked_person, tmp_path, capsys):
    """--annotations as COCO JSON (polygons, compressed or uncompressed RLE): a masked figure, the same
    joints from each; the same box from a CSV: unmasked (other joints), and the note says so."""
    photo, bbox, _, files = masked_person
    figures, printed = {}, {}
    for kind in ("polygons", "rle", "uncompressed rle", "csv"):
        out = tmp_path / kind.replace(" ", "_")
        status, printed[kind], stderr = evaluate_main(["--model", tiny_model, "--images", photo, "--annotations",
                                                       files[kind], "--out", out, "--quiet"], capsys)
        assert status == 0, stderr
        (entry,) = json.loads((out / "predictions.json").read_text())["images"]
        (figures[kind],) = entry["figures"]
        assert figures[kind]["bbox"] == [round(float(v), 2) for v in bbox] and figures[kind]["crop"] == "annotation"
    for kind in ("polygons", "rle", "uncompressed rle"):
        assert figures[kind]["masked"] is True and "without a person mask" not in printed[kind]
        assert figures[kind]["keypoints"] == figures["polygons"]["keypoints"], kind
    assert figures["csv"]["masked"] is False and "note: figures without a person mask: 1;" in printed["csv"]
    assert figures["csv"]["keypoints"] != figures["polygons"]["keypoints"]      # the mask changed the canvas
