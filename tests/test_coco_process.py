"""coco_process.py end to end: geometry round trip, masking, maps, streaming, resume, errors.

Runs go through coco_process.main in this process (conftest.process_coco, bad_input_table.run_main);
only the kill -9 test starts a real process. The default run of the real slice is the session
fixture sample_figures, the synthetic sample's (--allow-multi-polygon) synthetic_figures.
"""
import json
import os
import signal
import subprocess
import sys
import time
import zlib

import cv2
import numpy as np
import pytest

from figure_pose.data import coco_io
import coco_process
from figure_pose.data import figure_plan
from figure_pose.data import figure_writer
from bad_input_table import run_main
from conftest import REPO, process_coco
from figure_pose.core.confidence_maps import decode_keypoints, dequantise_maps
from figure_pose.core.figures import (apply_affine, bbox_mask, canvas_image, coco_indices, figure_joint_names,
                                      invert_affine, open_figures, read_sidecar, warp_to_canvas)


# What the default run of the real slice writes and counts (57 figures of 271 persons).
SLICE_FIGURES = 57
SLICE_COUNTS = {"annotations_seen": 271, "skipped_crowd": 8, "skipped_multi_polygon": 10,
                "skipped_too_few_keypoints": 188, "skipped_too_small": 8}
# The 60-image synthetic sample with --allow-multi-polygon (synthetic_figures).
SYNTHETIC_FIGURES = 118
SYNTHETIC_COUNTS = {"annotations_seen": 149, "skipped_crowd": 3, "skipped_too_few_keypoints": 1,
                    "skipped_too_small": 27}


def load_annotations(coco_root, split="train2017"):
    with open(os.path.join(coco_root, "annotations", f"person_keypoints_{split}.json")) as f:
        data = json.load(f)
    return {a["id"]: a for a in data["annotations"]}, {i["id"]: i for i in data["images"]}


def test_canvas_keypoints_map_back_to_coco_within_half_pixel(sample_figures, coco_sample):
    """Labelled joints map back to COCO; one whose map would be empty (far outside the canvas)
    is stored unlabelled, and counted."""
    figures = open_figures(str(sample_figures))
    anns, _ = load_annotations(coco_sample)
    columns = coco_indices(figure_joint_names(figures))
    worst, demoted, outside = 0.0, 0, 0
    for record in figures:
        original = np.asarray(anns[int(record["annotation_id"])]["keypoints"], float).reshape(17, 3)[columns]
        kept = record["keypoints"][:, 2] > 0
        back = apply_affine(invert_affine(record["affine"]), record["keypoints"][kept, :2])
        worst = max(worst, np.abs(back - original[kept, :2]).max())
        np.testing.assert_array_equal(record["keypoints"][kept, 2], original[kept, 2])  # visibility kept
        lost = (original[:, 2] > 0) & ~kept
        assert (record["keypoints"][lost] == 0).all() and (record["confidence_maps"][..., lost] == 0).all()
        xy = apply_affine(record["affine"], original[:, :2])
        off_canvas = ((xy < -0.5) | (xy >= int(record["canvas_size"]) - 0.5)).any(axis=1)
        assert not (lost & ~off_canvas).any()
        demoted += int(lost.sum())
        outside += int(((original[:, 2] > 0) & off_canvas).sum())
    assert worst < 0.5
    assert (outside, demoted) == (1, 0)  # one joint just outside its canvas, kept with part of its map
    assert read_sidecar(str(sample_figures))["counts"].get("keypoints_far_outside", 0) == demoted


def test_person_pixels_kept_and_background_white(sample_figures, coco_sample):
    """Recompute each figure's mask on the canvas: inside it the photo, outside it white."""
    from pycocotools import mask as mask_utils
    figures = open_figures(str(sample_figures))
    anns, images = load_annotations(coco_sample)
    black_inside = 0
    for record in figures:
        ann = anns[int(record["annotation_id"])]
        info = images[ann["image_id"]]
        photo = cv2.cvtColor(cv2.imread(str(coco_sample / "images" / "train2017" / info["file_name"])), cv2.COLOR_BGR2RGB)
        mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], info["height"], info["width"])))
        mask &= bbox_mask(ann["bbox"], info["height"], info["width"])
        size = int(record["canvas_size"])
        canvas = canvas_image(record)
        on_canvas = warp_to_canvas(mask.astype(np.float32), record["affine"], size, border_value=0)
        photo_canvas = warp_to_canvas(photo, record["affine"], size)
        inside, outside = on_canvas == 1.0, on_canvas == 0.0
        np.testing.assert_array_equal(canvas[inside], photo_canvas[inside])
        assert (canvas[outside] == 255).all()
        black_inside += int((photo_canvas[inside] == 0).all(axis=-1).sum())
    assert black_inside == 3746, "the slice's pure black person pixels, kept black"


def test_stored_maps_peak_at_keypoints(sample_figures):
    figures = open_figures(str(sample_figures))
    decoded = decode_keypoints(dequantise_maps(figures["confidence_maps"]))
    keypoints = np.asarray(figures["keypoints"])
    labelled = keypoints[..., 2] > 0
    inside = labelled & (keypoints[..., :2] > 30).all(-1) & (keypoints[..., :2] < 290).all(-1)
    errors = np.linalg.norm(decoded[..., :2] - keypoints[..., :2], axis=-1)
    assert errors[inside].max() < 0.1
    assert (decoded[~labelled][:, 2] == 0).all()                  # unlabelled: empty maps
    assert (keypoints[..., 2] == 1).sum() == 70 and labelled.sum() == 634, "visibility-1 joints kept with maps"
    assert (decoded[keypoints[..., 2] == 1][:, 2] > 0.5).all()


def test_output_is_one_memory_mapped_npy_with_sidecar(sample_figures):
    figures = np.load(sample_figures, mmap_mode="r")
    assert isinstance(figures, np.memmap) and figures.ndim == 1 and len(figures) == SLICE_FIGURES
    sidecar = read_sidecar(str(sample_figures))
    counts = sidecar["counts"]
    assert sidecar["figures"] == len(figures) and sidecar["problems"] == []
    skipped = sum(v for k, v in counts.items() if k.startswith("skipped_"))
    assert counts["annotations_seen"] == len(figures) + skipped
    assert counts == SLICE_COUNTS
    # at least 20x smaller than the original's 5.6 MB per figure
    assert os.path.getsize(sample_figures) / len(figures) < 5.63e6 / 20
    assert not os.path.exists(str(sample_figures) + ".partial")


def test_original_filter_is_stricter(coco_sample, tmp_path):
    """--min-keypoints counts kept joints: 13 of 13 keeps 21 of the default run's 57 figures;
    17 joints, several polygons and one keypoint keep 124 (one joint far outside its canvas)."""
    strict = open_figures(str(process_coco(coco_sample, tmp_path / "strict.npy", "--min-keypoints", 13)))
    loose_path = process_coco(coco_sample, tmp_path / "loose.npy", "--joints", 17, "--allow-multi-polygon",
                              "--min-keypoints", 1)
    loose = open_figures(str(loose_path))
    assert (len(strict), len(loose)) == (21, 124)
    assert ((strict["keypoints"][..., 2] > 0).sum(axis=1) == 13).all()
    assert loose.dtype["keypoints"].shape == (17, 3)
    assert read_sidecar(str(loose_path))["counts"]["keypoints_far_outside"] == 1


def test_interrupted_run_resumes_to_identical_file(coco_sample, sample_figures, tmp_path, monkeypatch, capsys):
    """Ctrl-C (here: from the 12th append) is one line; --resume then writes the bytes of an
    unbroken run (sample_figures)."""
    args = ["--coco-root", str(coco_sample), "--examples", "0", "--quiet", "--workers", "1",
            "--checkpoint-seconds", "0"]
    calls = {"n": 0}
    real_append = figure_writer.FigureWriter.append

    def append_then_die(self, records):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt("simulated Ctrl-C")
        real_append(self, records)

    killed = str(tmp_path / "killed.npy")
    monkeypatch.setattr(figure_writer.FigureWriter, "append", append_then_die)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        coco_process.main(args + ["--out", killed])
    assert "interrupted" in str(stop.value.code) and "\n" not in str(stop.value.code)
    assert not os.path.exists(killed) and os.path.exists(killed + ".partial")
    monkeypatch.setattr(figure_writer.FigureWriter, "append", real_append)
    capsys.readouterr()
    coco_process.main(args + ["--out", killed, "--resume"])
    assert "resuming after 11 images" in capsys.readouterr().out  # checkpointed after every image
    with open(sample_figures, "rb") as a, open(killed, "rb") as b:
        assert a.read() == b.read()
    assert sidecar_facts(killed) == sidecar_facts(str(sample_figures))


def test_worker_processes_write_the_same_bytes(synthetic_coco, synthetic_figures, tmp_path):
    """--workers 2 (spawned processes, results in order) writes what one process writes."""
    out = process_coco(synthetic_coco, tmp_path / "two.npy", "--allow-multi-polygon", "--workers", 2, "--limit", 30)
    assert open_figures(str(out)).tobytes() == open_figures(str(synthetic_figures))[:30].tobytes()


def sidecar_facts(path):
    sidecar = read_sidecar(path)
    return {k: sidecar[k] for k in ("figures", "counts", "problems", "data_bytes", "data_crc32")}


def test_kill_9_mid_run_then_resume_is_byte_identical(synthetic_coco, synthetic_figures, tmp_path, capsys):
    """SIGKILL a real run once its partial file holds records; --resume gives the unbroken run's
    bytes (synthetic_figures)."""
    args = ["--coco-root", str(synthetic_coco), "--allow-multi-polygon", "--examples", "0", "--quiet",
            "--workers", "1", "--checkpoint-seconds", "0"]
    straight, killed = str(synthetic_figures), str(tmp_path / "killed.npy")

    process = subprocess.Popen([sys.executable, str(REPO / "coco_process.py"), *args, "--out", killed], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress, records, deadline = killed + ".partial.json", 0, time.time() + 120
    while records < 20 and process.poll() is None and time.time() < deadline:
        time.sleep(0.002)
        if os.path.exists(progress):
            with open(progress) as f:  # written atomically: never half a file
                records = json.load(f)["records"]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not os.path.exists(killed) and not os.path.exists(killed + ".json")
    assert os.path.getsize(killed + ".partial") > figure_writer.HEADER_BYTES

    capsys.readouterr()
    coco_process.main(args + ["--out", killed, "--resume"])
    assert "resuming after" in capsys.readouterr().out
    with open(straight, "rb") as a, open(killed, "rb") as b:
        assert a.read() == b.read()
    assert sidecar_facts(killed) == sidecar_facts(straight)
    assert not os.path.exists(killed + ".partial") and not os.path.exists(progress)


def test_stop_between_sidecar_and_data_rename(synthetic_coco, synthetic_figures, tmp_path, monkeypatch, capsys):
    """The sidecar goes first and names its data file; stopped before the data rename, the old
    coco.npy stays, read_sidecar refuses the sidecar beside it, and --resume finishes the run."""
    args = ["--coco-root", str(synthetic_coco), "--allow-multi-polygon", "--examples", "0", "--quiet",
            "--workers", "1"]
    straight, out = str(synthetic_figures), str(tmp_path / "coco.npy")
    coco_process.main(args + ["--out", out, "--limit", "5"])  # the old pair
    assert len(open_figures(out)) == 5 and read_sidecar(out)["figures"] == 5

    real_replace = os.replace

    def stop_at_data_rename(src, dst):
        if dst == out:
            raise KeyboardInterrupt("simulated kill")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", stop_at_data_rename)
    with pytest.raises(SystemExit):
        coco_process.main(args + ["--out", out])
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(open_figures(out)) == 5  # the old data, beside the new sidecar
    with pytest.raises(ValueError, match="describes another file"):
        read_sidecar(out)
    assert os.path.exists(out + ".partial") and os.path.exists(out + ".partial.json")

    capsys.readouterr()
    coco_process.main(args + ["--out", out, "--resume"])
    assert "resuming after 56 images" in capsys.readouterr().out  # all 56 with figures: nothing left to redo
    with open(straight, "rb") as a, open(out, "rb") as b:
        assert a.read() == b.read()
    facts = sidecar_facts(out)
    assert facts == sidecar_facts(straight)
    with open(out, "rb") as f:
        assert facts["data_bytes"] == os.path.getsize(out)
        assert facts["data_crc32"] == zlib.crc32(f.read()[figure_writer.HEADER_BYTES:])


def test_limit_writes_first_n_figures(coco_sample, sample_figures, tmp_path, capsys):
    """--limit 5: the first 5 records of the whole run, byte for byte; --examples 2 draws the
    first and the last of them, each with its map sum, as RGB PNGs."""
    out = tmp_path / "few.npy"
    capsys.readouterr()
    process_coco(coco_sample, out, "--limit", 5, "--examples", 2, "--examples-dir", tmp_path / "ex")
    assert "figures written  : 5" in capsys.readouterr().out
    few, whole = open_figures(str(out)), open_figures(str(sample_figures))
    assert few.tobytes() == whole[:5].tobytes()
    assert sorted(p.name for p in (tmp_path / "ex").iterdir()) == ["5802_4.png", "5802_4_c.png", "790_0.png",
                                                                     "790_0_c.png"]
    maps = cv2.imread(str(tmp_path / "ex" / "790_0_c.png"))
    assert maps.shape == (320, 320, 3) and (maps == maps[..., :1]).all() and maps.max() > 200


# ----------------------------------------------------------------------------- bad input

def one_line_error(capsys, *argv):
    """The one stderr line of a coco_process run that fails with exit status 1."""
    status, _, err = run_main("coco_process", [str(a) for a in argv], capsys)
    assert status == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (status, err)
    return err.strip()


def test_missing_annotation_file(tmp_path, capsys):
    line = one_line_error(capsys, "--coco-root", tmp_path, "--out", tmp_path / "x.npy")
    assert line == (f"coco_process.py: error: annotation file not found: {tmp_path}/annotations/"
                    f"person_keypoints_train2017.json (run download_coco.sh, or pass --coco-root)")


def test_annotation_json_that_is_not_coco(tmp_path, capsys):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images" / "train2017").mkdir(parents=True)
    path = tmp_path / "annotations" / "person_keypoints_train2017.json"
    path.write_text('{"hello": 1}')
    line = one_line_error(capsys, "--coco-root", tmp_path, "--out", tmp_path / "x.npy")
    assert line == f"coco_process.py: error: {path} is not a COCO annotation file (no images or annotations)"
    path.write_text("not json")
    line = one_line_error(capsys, "--coco-root", tmp_path, "--out", tmp_path / "x.npy")
    assert line.startswith(f"coco_process.py: error: {path} is not JSON (Expecting value")
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "x.npy.partial").exists()


def test_output_path_that_cannot_be_written(coco_sample, tmp_path, capsys):
    line = one_line_error(capsys, "--coco-root", coco_sample, "--out", tmp_path / "no" / "such" / "x.npy")
    assert line == (f"coco_process.py: error: cannot write --out {tmp_path}/no/such/x.npy: "
                    f"directory {tmp_path}/no/such does not exist")


def test_unreadable_image_is_skipped_counted_and_named(coco_sample, sample_figures, tmp_path, capfd):
    """A truncated JPEG (the first image, 4 persons) is skipped with its name; the other figures
    of the first 8 are written as in the whole run (--limit 8 keeps the run to 5 images)."""
    (tmp_path / "annotations").mkdir()
    os.symlink(coco_sample / "annotations" / "person_keypoints_train2017.json",
               tmp_path / "annotations" / "person_keypoints_train2017.json")
    images = tmp_path / "images" / "train2017"
    images.mkdir(parents=True)
    for photo in (coco_sample / "images" / "train2017").iterdir():
        os.symlink(photo, images / photo.name)
    victim = "000000000790.jpg"
    (images / victim).unlink()
    (images / victim).write_bytes(b"\xff\xd8 this is not a jpeg")
    capfd.readouterr()
    process_coco(tmp_path, tmp_path / "x.npy", "--limit", 8)
    err = capfd.readouterr().err
    message = f"image {victim}: truncated JPEG (no end-of-image marker)"
    assert err.splitlines() == [f"coco_process.py: skipped {message}"]  # libjpeg's warning names no file: never decoded
    sidecar = read_sidecar(str(tmp_path / "x.npy"))
    assert sidecar["problems"] == [message] and sidecar["counts"]["skipped_image_unreadable"] == 4
    whole = open_figures(str(sample_figures))
    assert (whole["image_id"][:4] == 790).all()
    assert open_figures(str(tmp_path / "x.npy")).tobytes() == whole[4:8].tobytes()


def test_background_keep_crops_without_masking(coco_sample, tmp_path):
    """keep: the photo stays inside the bbox (also around the person), white outside it."""
    figures = open_figures(str(process_coco(coco_sample, tmp_path / "keep.npy", "--background", "keep",
                                            "--size", 256, "--limit", 10)))
    assert len(figures) == 10
    anns, images = load_annotations(coco_sample)
    for record in figures:
        ann = anns[int(record["annotation_id"])]
        info = images[ann["image_id"]]
        photo = cv2.cvtColor(cv2.imread(str(coco_sample / "images" / "train2017" / info["file_name"])), cv2.COLOR_BGR2RGB)
        in_bbox = warp_to_canvas(bbox_mask(ann["bbox"], info["height"], info["width"]).astype(np.float32),
                                 record["affine"], 256, border_value=0)
        canvas = canvas_image(record)
        assert canvas.shape == (256, 256, 3)
        np.testing.assert_array_equal(canvas[in_bbox == 1.0], warp_to_canvas(photo, record["affine"], 256)[in_bbox == 1.0])
        assert (canvas[in_bbox == 0.0] == 255).all()


def test_synthetic_sample_processes_cleanly_and_round_trips(synthetic_coco, synthetic_figures):
    figures = open_figures(str(synthetic_figures))
    anns, _ = load_annotations(synthetic_coco)
    assert len(figures) == SYNTHETIC_FIGURES
    columns = coco_indices(figure_joint_names(figures))
    for record in figures:
        original = np.asarray(anns[int(record["annotation_id"])]["keypoints"], float).reshape(17, 3)[columns]
        labelled = original[:, 2] > 0
        back = apply_affine(invert_affine(record["affine"]), record["keypoints"][labelled, :2])
        assert np.abs(back - original[labelled, :2]).max() < 0.5
    sidecar = read_sidecar(str(synthetic_figures))
    assert sidecar["counts"] == SYNTHETIC_COUNTS and sidecar["problems"] == []


# ----------------------------------------------------------------------------- compact loading

def test_compact_loader_keeps_only_what_is_read(synthetic_coco):
    """compact_coco_object: the read fields only, number lists as the float64 values they stood for."""
    path = str(synthetic_coco / "annotations" / "person_keypoints_train2017.json")
    plain = coco_io.load_coco_annotations(path)
    compact = coco_io.load_coco_annotations(path, object_hook=coco_io.compact_coco_object)
    assert [{k: i[k] for k in ("id", "file_name", "width", "height")} for i in plain["images"]] == compact["images"]
    assert len(compact["annotations"]) == len(plain["annotations"])
    for full, slim in zip(plain["annotations"], compact["annotations"]):
        assert set(slim) == {"id", "image_id", "bbox", "keypoints", "iscrowd", "segmentation"}
        assert (slim["id"], slim["image_id"], slim["bbox"]) == (full["id"], full["image_id"], full["bbox"])
        assert slim["keypoints"].dtype == np.float64
        np.testing.assert_array_equal(slim["keypoints"], np.asarray(full["keypoints"], dtype=np.float64))
        if full["iscrowd"]:
            assert isinstance(full["segmentation"], dict) and slim["segmentation"] is None  # RLE: never read
        else:
            assert len(slim["segmentation"]) == len(full["segmentation"])
            for polygon, values in zip(slim["segmentation"], full["segmentation"]):
                assert polygon.dtype == np.float64  # exact: COCO polygons have decimals
                np.testing.assert_array_equal(polygon, np.asarray(values, dtype=np.float64))


@pytest.mark.parametrize("sample,figures,flags,crowd", [
    ("synthetic_coco", "synthetic_figures", ["--allow-multi-polygon"], 3),
    ("coco_sample", "sample_figures", [], 8)])
def test_compact_loading_writes_the_same_file(sample, figures, flags, crowd, request, tmp_path, monkeypatch):
    """The compact, skipping loader (the session's runs) gives byte-identical figures and the same
    counts as a plain json.load (the real slice has fractional polygons and crowd RLE; the
    synthetic one, multi-polygons)."""
    compact, plain = str(request.getfixturevalue(figures)), str(tmp_path / "plain.npy")
    monkeypatch.setattr(coco_process, "skipping_object_hook", lambda settings: None)  # json.load keeps all
    process_coco(request.getfixturevalue(sample), plain, *flags)
    with open(compact, "rb") as a, open(plain, "rb") as b:
        assert a.read() == b.read()
    assert read_sidecar(compact)["counts"] == read_sidecar(plain)["counts"]
    assert read_sidecar(compact)["counts"]["skipped_crowd"] == crowd


def test_skipping_hook_plans_the_same_work(coco_sample):
    """skipping_object_hook: skipped persons shrink to ids and reason; the plan is unchanged."""
    from figure_pose.core.figures import joint_names
    path = str(coco_sample / "annotations" / "person_keypoints_train2017.json")
    settings = {"joint_names": joint_names(13), "min_keypoints": 8, "background": "white",
                "allow_multi_polygon": False, "min_area": 2500, "size": 320, "map_stride": 4}
    plain = coco_io.load_coco_annotations(path)
    hooked = coco_io.load_coco_annotations(path, object_hook=figure_plan.skipping_object_hook(settings))
    for full, slim in zip(plain["annotations"], hooked["annotations"]):
        reason = figure_plan.skip_reason(full, settings)
        assert slim["skipped"] == reason
        if reason:
            assert slim == {"id": full["id"], "image_id": full["image_id"], "skipped": reason}
    tasks, counts, problems = figure_plan.plan_work(hooked, settings)
    plain_tasks, plain_counts, plain_problems = figure_plan.plan_work(plain, settings)
    assert counts == plain_counts == SLICE_COUNTS and problems == plain_problems == []
    assert sum(len(anns) for _, anns in tasks) == SLICE_FIGURES and len(tasks) == 35
    assert [(i["id"], [a["id"] for a in anns]) for i, anns in tasks] == \
        [(i["id"], [a["id"] for a in anns]) for i, anns in plain_tasks]


def test_examples_go_beside_the_output_by_default(synthetic_coco, tmp_path):
    """Not into the repository's imgs/ (the README's own pictures)."""
    before = sorted(p.name for p in (REPO / "imgs").iterdir())
    process_coco(synthetic_coco, tmp_path / "c.npy", "--allow-multi-polygon", "--examples", 2, "--limit", 6)
    assert len(list((tmp_path / "c_examples").glob("*.png"))) == 4          # 2 figures, each with its maps
    assert sorted(p.name for p in (REPO / "imgs").iterdir()) == before
