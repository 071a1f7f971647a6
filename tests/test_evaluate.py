"""evaluate.py: the oracle proves geometry + maps + decoding + inverse transform agree with
pycocotools; results round-trip to original pixels; a mean-pose model scores as the baseline;
bad input gives one line; export equivalence and the export's codec. (--images: test_photos.py.)

evaluate.main runs in this process (bad_input_table.run_main: exit status, stdout, stderr);
a subprocess only where the process boundary is the point (TensorFlow's start-up lines on
fd 2, the standalone script of docs/evaluation.md).
"""
import json
import types
import zipfile

import numpy as np
import pytest

import evaluate_fixtures
from conftest import REPO, run_script
from evaluate_fixtures import evaluate_main, one_line_error

EVALUATE = REPO / "evaluate.py"
synthetic = evaluate_fixtures.synthetic
tiny_model = evaluate_fixtures.tiny_model


@pytest.fixture(scope="module")
def real(coco_sample, sample_figures):
    """(coco root, coco.npy) of the real COCO train2017 slice (conftest: made once per session)."""
    return coco_sample, sample_figures


def run_oracle(root, npy, out, capsys, *extra):
    status, stdout, stderr = evaluate_main(["--oracle", "--data", npy, "--coco-root", root, "--split", "train2017",
                                            "--out", out, "--quiet", *extra], capsys)
    assert status == 0, stderr
    return json.loads((out / "metrics.json").read_text()), stdout


def check_results_round_trip(root, npy, out):
    """The results JSON holds each person's kept joints at its COCO keypoints, in original pixels,
    with the oracle's confidences: the stored peaks (>= 0.93 on the canvas), 0 where unlabelled."""
    from figure_pose.core.figures import coco_indices, joint_names, open_figures
    figures = open_figures(str(npy))
    results = json.loads((out / "keypoints_train2017_results.json").read_text())
    assert len(results) == len(figures)
    annotations = json.loads((root / "annotations" / "person_keypoints_train2017.json").read_text())
    by_id = {a["id"]: a for a in annotations["annotations"]}
    cols = coco_indices(joint_names(13))
    dropped = np.setdiff1d(np.arange(17), cols)
    worst = 0.0
    for r, record in zip(results, figures):
        assert r["category_id"] == 1 and r["image_id"] == int(record["image_id"])
        assert r["annotation_id"] == int(record["annotation_id"])
        pred = np.asarray(r["keypoints"]).reshape(17, 3)
        assert np.all(pred[dropped] == 0)                      # eyes and ears: not predicted
        conf = np.asarray(r["joint_confidence"])
        assert np.all(conf[dropped] == 0) and r["score"] == pytest.approx(conf[cols].mean(), abs=1e-4)
        kp = record["keypoints"]
        on_canvas = (kp[:, 2] > 0) & np.all((kp[:, :2] >= 0) & (kp[:, :2] <= record["canvas_size"] - 1), axis=1)
        assert np.all(conf[cols][on_canvas] >= 0.93) and np.all(conf[cols][kp[:, 2] == 0] == 0)
        gt = np.asarray(by_id[r["annotation_id"]]["keypoints"], dtype=float).reshape(17, 3)[cols]
        labelled = gt[:, 2] > 0
        side = max(record["bbox"][2:])
        worst = max(worst, (np.linalg.norm(pred[cols][labelled, :2] - gt[labelled, :2], axis=1) / side).max())
    assert worst < 0.02        # sub-pixel, except joints labelled outside the canvas (clamped to its edge)


def test_oracle_on_synthetic_sample(synthetic, tmp_path, capsys):
    root, npy = synthetic
    metrics, stdout = run_oracle(root, npy, tmp_path, capsys, "--compare-decoding")
    assert metrics["ap"] == 1.0 and metrics["pck@0.05"] == 1.0
    assert metrics["ap50"] == 1.0 and metrics["ar"] == 1.0
    assert metrics["figures"] == metrics["persons"] == 25 and metrics["images"] == 15
    assert metrics["oks_mean"] == pytest.approx(1.0, abs=1e-6)
    assert "pck@0.05" in stdout and "ap" in stdout        # the printed table
    compare = metrics["decoding_comparison"]
    assert set(compare) == {"dark", "quarter", "none", "dark+flip", "quarter+flip", "none+flip"}
    assert compare["dark"]["mean_error_px"] < compare["quarter"]["mean_error_px"] < compare["none"]["mean_error_px"]
    assert compare["dark+flip"]["ap"] == 1.0             # rendering of the mirror agrees with flip_maps
    assert metrics["baseline"]["pck@0.2"] < metrics["pck@0.2"]
    misses = metrics["misses@0.2"]      # joints hidden by a person in front are labelled, and cut away: on white
    assert (misses["missed"], misses["inversions"], misses["on_white"]) == (0, 0, 0) and misses["labels_on_white"] > 0
    assert f"missed at PCK@0.2: 0 of {metrics['labelled_joints']} labelled joints" in stdout
    check_results_round_trip(root, npy, tmp_path)
    for name in ("examples.png", "worst.png", "pck_per_joint.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_oracle_on_real_slice(real, tmp_path, capsys):
    root, npy = real
    metrics, _ = run_oracle(root, npy, tmp_path, capsys, "--train-data", npy, "--pictures", 2)
    assert metrics["ap"] >= 0.99 and metrics["pck@0.05"] >= 0.99
    assert metrics["figures"] == 57 and metrics["mean_error_px"] < 0.5
    assert metrics["baseline"]["label"] == "mean pose (training figures)"
    check_results_round_trip(root, npy, tmp_path)


def test_labels_on_white_are_off_the_annotation_mask(real):
    """On the real slice, a label on the white canvas is one outside the person's segmentation
    mask (pycocotools' annToMask at the label and its 8 neighbours, in the photo): none inside,
    and most labels off the mask are found (the rest sit at its edge, blended by the resize)."""
    from pycocotools.coco import COCO
    from figure_pose.core.figures import gt_original, open_figures
    from figure_pose.evaluation.evaluation import labels_on_white
    root, npy = real
    figures = open_figures(str(npy))
    keypoints = np.asarray(figures["keypoints"], dtype=np.float64)
    on_white = labels_on_white(figures, np.arange(len(figures)), keypoints)
    photo_xy = gt_original(keypoints, np.asarray(figures["affine"], dtype=np.float64))[..., :2]
    coco = COCO(str(root / "annotations" / "person_keypoints_train2017.json"))
    off_mask = np.zeros_like(on_white)
    for i, annotation_id in enumerate(figures["annotation_id"]):
        mask = coco.annToMask(coco.loadAnns(int(annotation_id))[0])
        for j in np.flatnonzero(keypoints[i, :, 2] > 0):
            x, y = np.rint(photo_xy[i, j]).astype(int)
            off_mask[i, j] = not mask[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].any()
    assert off_mask.sum() >= 20                              # the slice has such labels to find
    assert not (on_white & ~off_mask).any()
    assert on_white.sum() >= 0.9 * off_mask.sum()


def test_without_coco_root_says_so(synthetic, tmp_path, capsys):
    _, npy = synthetic
    status, stdout, stderr = evaluate_main(["--oracle", "--data", npy, "--out", tmp_path, "--quiet", "--pictures", 0,
                                            "--limit", 10], capsys)
    assert status == 0, stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["figures"] == 10 and metrics["pck@0.05"] == 1.0
    assert metrics["gt"] == "figures (no --coco-root)" and metrics["ap"] == 1.0
    assert "no --coco-root" in " ".join(metrics["notes"]) and "no --coco-root" in stdout
    assert "evaluated figures themselves" in metrics["baseline"]["label"]
    assert not list(tmp_path.glob("*.png.partial")) and not (tmp_path / "examples.png").exists()


def pose_predictor(pose_canvas, canvas_size, model_size, stride=4):
    """A stand-in model of input side model_size whose maps show the same canvas pose (J, 2) for every
    figure (Gaussians of the codec's sigma, unquantised): the mean-pose baseline, as a model."""
    from figure_pose.core.confidence_maps import render_confidence_maps
    m = model_size // stride
    xy = (np.asarray(pose_canvas) + 0.5) * model_size / canvas_size - 0.5      # pixel centres scale with the side
    maps = render_confidence_maps(np.concatenate([xy, np.full((len(xy), 1), 2.0)], -1), m, stride)
    model = types.SimpleNamespace(inputs=[types.SimpleNamespace(shape=(None, model_size, model_size, 3))],
                                  outputs=[types.SimpleNamespace(shape=(None, m, m, len(xy)))])
    return model, lambda _model, canvases, batch_size=16: np.repeat(maps[None], len(canvases), axis=0)


def test_a_model_predicting_the_mean_pose_scores_as_the_baseline(synthetic, tmp_path, capsys, monkeypatch):
    """Through the whole evaluation (a 96 px model on 320 px canvases: the rescaled codec, the inverse
    affine, COCO results and scoring), a model that answers the mean pose scores what the mean-pose
    baseline scores."""
    import evaluate
    from figure_pose.core.figures import open_figures
    from figure_pose.core.metrics import mean_pose
    _, npy = synthetic
    pose = mean_pose(open_figures(str(npy))["keypoints"])
    monkeypatch.setattr(evaluate, "load_model_checked", lambda path: pose_predictor(pose, 320, 96))
    status, _, stderr = evaluate_main(["--model", "pose", "--data", npy, "--out", tmp_path, "--no-flip-test",
                                       "--pictures", 0, "--quiet"], capsys)
    assert status == 0, stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    base = metrics["baseline"]
    assert metrics["figures"] == 25 and base["label"] == "mean pose (of the evaluated figures themselves)"
    for t in ("0.05", "0.1", "0.2"):
        assert metrics[f"pck@{t}"] == base[f"pck@{t}"]
        assert metrics["pck_per_joint"][f"pck@{t}"] == base["pck_per_joint"][f"pck@{t}"]
    assert metrics["mean_error_px"] == pytest.approx(base["mean_error_px"], abs=0.02)
    assert metrics["oks_mean"] == pytest.approx(base["oks_mean"], abs=1e-3)
    assert 0.2 < metrics["pck@0.2"] < 1.0 and metrics["pck@0.05"] < 0.5     # a real baseline, not a trivial one
    misses = metrics["misses@0.2"]
    assert misses["missed"] == round((1 - metrics["pck@0.2"]) * metrics["labelled_joints"])
    assert 0 <= misses["inversions"] < misses["missed"] and 0 <= misses["on_white"] <= misses["labels_on_white"]


def test_labels_on_white_are_those_outside_the_cut_out(synthetic):
    """A label is on white when the canvas is white (255) at it and its 8 neighbours: everywhere on
    an all-white crop; on a black crop only in the white border, or on a 3 x 3 white patch."""
    from figure_pose.core.figures import open_figures, white_border
    from figure_pose.evaluation.evaluation import labels_on_white
    _, npy = synthetic
    figures = np.array(open_figures(str(npy))[:2])
    border = white_border(320)
    figures["figure"][0], figures["figure"][1] = 255, 0
    figures["figure"][1, 100 - border - 1:100 - border + 2, 200 - border - 1:200 - border + 2] = 255  # at (200, 100)
    figures["figure"][1, 150 - border, 200 - border] = 255                                           # one pixel
    kp = np.zeros((2, 13, 3))
    kp[..., :2], kp[..., 2] = 160.0, 2.0
    kp[1, :6, :2] = [(border - 2.0, 160.0), (border, 160.0), (200.0, 100.0), (200.0, 150.0), (200.4, 99.6),
                     (201.0, 100.0)]
    kp[0, 12, 2] = 0                                                                                  # unlabelled
    on_white = labels_on_white(figures, np.arange(2), kp)
    np.testing.assert_array_equal(on_white[0], np.arange(13) < 12)
    np.testing.assert_array_equal(on_white[1], [True, False, True, False, True, False] + [False] * 7)


def test_model_mistake_is_one_line_with_tensorflow_loaded(synthetic, tmp_path):
    """As a process (TensorFlow's C++ start-up lines go to fd 2, which only a process shows): a text
    file as --model is one line, after TensorFlow has loaded."""
    _, npy = synthetic
    text = tmp_path / "notes.keras"
    text.write_text("not a model\n")
    result = run_script(EVALUATE, "--model", text, "--data", npy, "--out", tmp_path / "out")
    assert "not a figure-pose model" in one_line_error(result.returncode, result.stderr)
    assert not (tmp_path / "out").exists()


def test_bad_inputs_give_one_line(synthetic, tmp_path, capsys):
    """Beside the bad-input table (tests/cases_evaluate.py): a foreign .keras for evaluation, a .npy
    without the figure fields."""
    _, npy = synthetic
    out = tmp_path / "out"
    foreign = tmp_path / "foreign.keras"                      # a zip, but not a Keras model of ours
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("config.json", json.dumps({"class_name": "Nothing"}))
    no_affine = tmp_path / "other.npy"
    np.save(no_affine, np.zeros(3, dtype=[("image_id", "<i8"), ("keypoints", "<f4", (13, 3))]))
    assert "foreign.keras is not a figure-pose model" in one_line_error(
        *evaluate_main(["--model", foreign, "--data", npy, "--out", out], capsys)[::2])
    assert "missing fields: annotation_id, canvas_size, bbox, affine" in one_line_error(
        *evaluate_main(["--oracle", "--data", no_affine, "--out", out], capsys)[::2])
    assert not out.exists()


def test_help_explains_every_flag(capsys):
    status, stdout, _ = evaluate_main(["--help"], capsys)
    assert status == 0
    for flag in ("--model", "--oracle", "--data", "--images", "--export", "--out", "--coco-root", "--split",
                 "--train-data", "--limit", "--image-ids", "--compare-decoding", "--pictures", "--refine",
                 "--flip-test", "--batch-size", "--bbox", "--annotations", "--min-confidence", "--quiet",
                 "--run", "--overwrite"):
        assert flag in stdout
    text = " ".join(stdout.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert text.count("(default: ") + text.count("default:") >= 5 and "val2017 (default: from the" in text
    assert "0.672" not in text                         # no measured numbers that go stale


# ----------------------------------------------------------------------------- with a (tiny, untrained) model

def test_model_evaluation_scores_what_it_writes(tiny_model, synthetic, tmp_path, capsys):
    from figure_pose.core.figures import joint_names
    from figure_pose.evaluation.coco_eval import (coco_keypoint_eval, gt_dataset_from_annotations, load_annotations,
                                                  person_oks)
    root, npy = synthetic
    status, _, stderr = evaluate_main(["--model", tiny_model, "--data", npy, "--coco-root", root, "--out",
                                       tmp_path / "eval", "--limit", 6, "--pictures", 2, "--flip-test", "--quiet"],
                                      capsys)
    assert status == 0, stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["figures"] == 6 and metrics["decoding"] == "dark+flip" and metrics["source"] == str(tiny_model)
    # the AP, AR and OKS in metrics.json are those of the results file written beside it
    results = json.loads((tmp_path / "eval" / "keypoints_train2017_results.json").read_text())
    names = joint_names(13)
    gt = gt_dataset_from_annotations(load_annotations(str(root), "train2017"),
                                     [r["annotation_id"] for r in results], names)
    stats, evaluator = coco_keypoint_eval(gt, results, names)
    assert len(results) == 6 and (metrics["ap"], metrics["ar"]) == (stats["ap"], stats["ar"])
    assert metrics["oks_mean"] == pytest.approx(np.nanmean(list(person_oks(evaluator).values())), rel=1e-12)
    assert metrics["oks_mean"] < metrics["baseline"]["oks_mean"]          # untrained: worse than the mean pose
    assert (tmp_path / "eval" / "worst.png").exists()


@pytest.mark.parametrize("kind", ["tflite", "saved_model"])
def test_export_gives_the_same_keypoints(kind, tiny_model, exports, synthetic):
    import cv2

    from figure_pose.core.figures import canvas_image, open_figures
    from figure_pose.evaluation.inference import (decode, export_info, exported_predictor, import_network,
                                                  load_model_checked)
    network = import_network()
    model, _ = load_model_checked(str(tiny_model))
    assert export_info(model, kind, "x")["input_size"] == 96
    name = "model.tflite" if kind == "tflite" else "saved_model"
    assert json.loads((exports[kind] / "export.json").read_text()) == export_info(model, kind, name)
    figures = open_figures(str(synthetic[1]))
    canvases = np.stack([cv2.resize(canvas_image(r), (96, 96), interpolation=cv2.INTER_AREA) for r in figures[:6]])
    reference = decode(network.predict_maps(model, canvases), 96, 96, "dark")
    exported = decode(exported_predictor(str(exports[kind]))(None, canvases), 96, 96, "dark")
    assert np.abs(exported[..., :2] - reference[..., :2]).max() < 0.5
    np.testing.assert_allclose(exported[..., 2], reference[..., 2], atol=1e-3)


@pytest.mark.parametrize("arch, stride, sigma_map_px", [("simple", 4, 2), ("original", 1, 8)])
def test_export_json_records_the_codec_of_each_architecture(arch, stride, sigma_map_px):
    """export.json's stride and sigma are those the architecture trains with: sigma 8 input px,
    2 map px at stride 4 (simple), 8 map px at stride 1 (original). (export_model writes
    export_info: test_export_gives_the_same_keypoints reads it back from real exports.)"""
    from figure_pose.core.confidence_maps import ARCH_CODECS
    from figure_pose.evaluation.inference import export_info, import_network
    info = export_info(import_network().build_model(arch, size=64, width=0.25), "saved_model", "saved_model")
    assert (info["input_size"], info["map_size"]) == (64, 64 // stride)
    assert (info["stride"], info["sigma_px"], info["sigma_map_px"]) == (stride, 8, sigma_map_px)
    assert ARCH_CODECS[arch].to_json() == {k: info[k] for k in ("stride", "sigma_px", "sigma_map_px")}


@pytest.fixture(scope="module")
def exports(tiny_model, tmp_path_factory):
    """{kind: folder} of the tiny model exported by `evaluate.py --export` (in-process)."""
    import evaluate
    folders = {}
    for kind in ("tflite", "saved_model"):
        folders[kind] = tmp_path_factory.mktemp(kind)
        evaluate.main(["--model", str(tiny_model), "--export", kind, "--out", str(folders[kind])])
    return folders


def test_exported_models_evaluate_like_keras(tiny_model, exports, synthetic, tmp_path):
    """--model takes the .keras file, the SavedModel folder and the .tflite file: the same keypoints
    (original pixels, within 0.5 px) and confidences, in evaluation and in --images."""
    import evaluate
    from figure_pose.evaluation import inference
    root, npy = synthetic
    models = {"keras": tiny_model, "saved_model": exports["saved_model"] / "saved_model",
              "tflite": exports["tflite"] / "model.tflite"}
    results, photos = {}, {}
    image = sorted((root / "images" / "train2017").glob("*.jpg"))[0]
    for kind, path in models.items():
        evaluate.main(["--model", str(path), "--data", str(npy), "--out", str(tmp_path / kind), "--limit", "5",
                       "--pictures", "0", "--quiet"])
        results[kind] = json.loads((tmp_path / kind / "keypoints_train2017_results.json").read_text())
        evaluate.main(["--model", str(path), "--images", str(image), "--out", str(tmp_path / f"img_{kind}"),
                       "--quiet"])
        photos[kind] = json.loads((tmp_path / f"img_{kind}" / "predictions.json").read_text())
    reference = np.array([r["keypoints"] for r in results["keras"]])
    ref_photo = np.array(list(photos["keras"]["images"][0]["figures"][0]["keypoints"].values()))
    assert reference.shape == (5, 51)
    for kind in ("saved_model", "tflite"):
        assert np.abs(np.array([r["keypoints"] for r in results[kind]]) - reference).max() < 0.5
        np.testing.assert_allclose([r["score"] for r in results[kind]], [r["score"] for r in results["keras"]],
                                   atol=1e-3)
        photo = np.array(list(photos[kind]["images"][0]["figures"][0]["keypoints"].values()))
        assert np.abs(photo[:, :2] - ref_photo[:, :2]).max() < 0.5
    # the export folder itself also names the model (export.json says which file)
    model = inference.load_model_checked(str(exports["tflite"]))[0]
    assert model.format == "tflite" and model.input_size == 96


def test_exported_model_mistakes_give_one_line(exports, synthetic, tmp_path, capsys):
    _, npy = synthetic
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "model.tflite").write_bytes((exports["tflite"] / "model.tflite").read_bytes())
    out = tmp_path / "o"
    assert "export.json" in one_line_error(
        *evaluate_main(["--model", lonely / "model.tflite", "--data", npy, "--out", out], capsys)[::2])
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer")
    (tmp_path / "export.json").write_text((exports["tflite"] / "export.json").read_text())
    assert "not a readable TFLite model" in one_line_error(
        *evaluate_main(["--model", tmp_path / "junk.tflite", "--data", npy, "--out", out], capsys)[::2])
    assert "not an exported figure-pose model" in one_line_error(
        *evaluate_main(["--model", lonely, "--data", npy, "--out", out], capsys)[::2])
    assert "is an export already" in one_line_error(
        *evaluate_main(["--model", exports["tflite"], "--export", "tflite", "--out", out], capsys)[::2])
    assert not out.exists()


def docs_tflite_example():
    """The fenced python block of docs/evaluation.md that starts with `# run_tflite.py`."""
    text = (REPO / "docs" / "evaluation.md").read_text()
    start = text.index("```python\n# run_tflite.py") + len("```python\n")
    return text[start:text.index("```", start)]


def test_docs_standalone_tflite_example_runs(exports, synthetic, tmp_path):
    """docs/evaluation.md's standalone runner (NumPy, OpenCV, a TFLite interpreter; nothing of this
    repository) gives evaluate.py's keypoints with the same decoding, within 0.5 px."""
    import evaluate
    root, _ = synthetic
    script = tmp_path / "run_tflite.py"
    script.write_text(docs_tflite_example())
    model = exports["tflite"] / "model.tflite"
    image = sorted((root / "images" / "train2017").glob("*.jpg"))[1]
    for box in ("30.5,20,40,60", "5,3,110,150"):          # canvas scale > 1 and < 1
        result = run_script(script, model, image, box, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        standalone = json.loads(result.stdout.strip().splitlines()[-1])
        out = tmp_path / f"eval_{box}"
        evaluate.main(["--model", str(model), "--images", str(image), "--bbox", box, "--refine", "quarter",
                       "--no-flip-test", "--out", str(out), "--quiet"])
        (figure,) = json.loads((out / "predictions.json").read_text())["images"][0]["figures"]
        assert list(standalone) == list(figure["keypoints"])
        ours = np.array(list(figure["keypoints"].values()))
        theirs = np.array(list(standalone.values()))
        if box.startswith("30.5"):       # same canvas bit for bit: the same keypoints
            assert np.abs(theirs[:, :2] - ours[:, :2]).max() < 0.5
            np.testing.assert_allclose(theirs[:, 2], ours[:, 2], atol=1e-3)
        else:                            # area-shrunk from the whole photo, not a window: close, not equal
            assert np.isfinite(theirs).all() and np.abs(theirs[:, 2] - ours[:, 2]).max() < 0.05
