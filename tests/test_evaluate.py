"""evaluate.py: the oracle proves geometry + maps + decoding + inverse transform agree with
pycocotools; results round-trip to original pixels; bad input gives one line; inference on
images; export equivalence."""
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_script

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_SAMPLE = SHARED / "data" / "coco-sample"
EVALUATE = REPO / "evaluate.py"


def real_sample_or_skip():
    if not (REAL_SAMPLE / "annotations" / "person_keypoints_train2017.json").exists():
        pytest.skip(f"real COCO slice not found at {REAL_SAMPLE} (needs ../shared beside the checkout)")
    return REAL_SAMPLE


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """(coco root, coco.npy) of a small synthetic COCO sample."""
    if not (REPO / "synthetic_coco.py").exists():
        pytest.skip("synthetic_coco.py not present")
    root = tmp_path_factory.mktemp("syn")
    result = run_script(REPO / "synthetic_coco.py", "--out", root, "--images", 16, "--seed", 3)
    assert result.returncode == 0, result.stderr
    npy = root / "coco.npy"
    result = run_script(REPO / "coco_process.py", "--coco-root", root, "--out", npy, "--examples", 0,
                        "--quiet", "--workers", 2)
    assert result.returncode == 0, result.stderr
    return root, npy


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """(coco root, coco.npy) of the real COCO train2017 slice."""
    root = real_sample_or_skip()
    npy = tmp_path_factory.mktemp("real") / "coco.npy"
    result = run_script(REPO / "coco_process.py", "--coco-root", root, "--out", npy, "--examples", 0,
                        "--quiet", "--workers", 2)
    assert result.returncode == 0, result.stderr
    return root, npy


def run_oracle(root, npy, out, *extra):
    result = run_script(EVALUATE, "--oracle", "--data", npy, "--coco-root", root, "--split", "train2017",
                        "--out", out, "--quiet", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "metrics.json").read_text()), result


def check_results_round_trip(root, npy, out):
    """The results JSON holds each person's kept joints at its COCO keypoints, in original pixels."""
    from figures import coco_indices, joint_names, open_figures
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
        assert 0.0 <= r["score"] <= 1.0
        pred = np.asarray(r["keypoints"]).reshape(17, 3)
        assert np.all(pred[dropped] == 0)                      # eyes and ears: not predicted
        gt = np.asarray(by_id[r["annotation_id"]]["keypoints"], dtype=float).reshape(17, 3)[cols]
        labelled = gt[:, 2] > 0
        side = max(record["bbox"][2:])
        worst = max(worst, (np.linalg.norm(pred[cols][labelled, :2] - gt[labelled, :2], axis=1) / side).max())
    assert worst < 0.02        # sub-pixel, except joints labelled outside the canvas (clamped to its edge)


def test_oracle_on_synthetic_sample(synthetic, tmp_path):
    root, npy = synthetic
    metrics, result = run_oracle(root, npy, tmp_path, "--compare-decoding")
    assert metrics["ap"] >= 0.99 and metrics["pck@0.05"] >= 0.99
    assert metrics["ap50"] >= 0.99 and metrics["ar"] >= 0.99
    assert metrics["figures"] == metrics["persons"] > 0
    assert "pck@0.05" in result.stdout and "ap" in result.stdout        # the printed table
    compare = metrics["decoding_comparison"]
    assert set(compare) == {"dark", "quarter", "none", "dark+flip", "quarter+flip", "none+flip"}
    assert compare["dark"]["mean_error_px"] < compare["quarter"]["mean_error_px"] < compare["none"]["mean_error_px"]
    assert compare["dark+flip"]["ap"] >= 0.99            # rendering of the mirror agrees with flip_maps
    assert metrics["baseline"]["pck@0.2"] < metrics["pck@0.2"]
    check_results_round_trip(root, npy, tmp_path)
    for name in ("examples.png", "worst.png", "pck_per_joint.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_oracle_on_real_slice(real, tmp_path):
    root, npy = real
    metrics, _ = run_oracle(root, npy, tmp_path, "--train-data", npy, "--pictures", 2)
    assert metrics["ap"] >= 0.99 and metrics["pck@0.05"] >= 0.99
    assert metrics["figures"] == 57 and metrics["mean_error_px"] < 0.5
    assert metrics["baseline"]["label"] == "mean pose (training figures)"
    check_results_round_trip(root, npy, tmp_path)


def test_without_coco_root_says_so(synthetic, tmp_path):
    _, npy = synthetic
    result = run_script(EVALUATE, "--oracle", "--data", npy, "--out", tmp_path, "--quiet", "--pictures", 0,
                        "--limit", 10)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["figures"] == 10 and metrics["pck@0.05"] >= 0.99
    assert "no --coco-root" in " ".join(metrics["notes"]) and "no --coco-root" in result.stdout
    assert "evaluated figures themselves" in metrics["baseline"]["label"]


def one_line_error(result):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error:"), result.stderr
    return lines[0]


def test_bad_inputs_give_one_line(synthetic, tmp_path):
    _, npy = synthetic
    out = tmp_path / "out"
    text = tmp_path / "notes.keras"
    text.write_text("not a model\n")
    foreign = tmp_path / "foreign.keras"                      # a zip, but not a Keras model of ours
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("config.json", json.dumps({"class_name": "Nothing"}))
    no_affine = tmp_path / "other.npy"
    np.save(no_affine, np.zeros(3, dtype=[("image_id", "<i8"), ("keypoints", "<f4", (13, 3))]))
    assert "not a figure-pose model" in one_line_error(
        run_script(EVALUATE, "--model", text, "--data", npy, "--out", out))
    assert "not a figure-pose model" in one_line_error(
        run_script(EVALUATE, "--model", foreign, "--data", npy, "--out", out))
    assert "not a figure file" in one_line_error(run_script(EVALUATE, "--oracle", "--data", no_affine, "--out", out))
    assert "not found" in one_line_error(run_script(EVALUATE, "--oracle", "--data", tmp_path / "x.npy", "--out", out))
    assert "empty selection" in one_line_error(
        run_script(EVALUATE, "--oracle", "--data", npy, "--image-ids", "999999", "--out", out))
    assert "no such file" in one_line_error(
        run_script(EVALUATE, "--model", foreign, "--images", tmp_path / "missing.jpg", "--out", out))


def test_help_explains_every_flag():
    result = run_script(EVALUATE, "--help")
    assert result.returncode == 0
    for flag in ("--model", "--oracle", "--data", "--images", "--export", "--out", "--coco-root", "--split",
                 "--train-data", "--limit", "--image-ids", "--compare-decoding", "--pictures", "--refine",
                 "--flip-test", "--batch-size", "--bbox", "--annotations", "--min-confidence", "--quiet",
                 "--run", "--overwrite"):
        assert flag in result.stdout
    text = " ".join(result.stdout.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert text.count("(default: ") + text.count("default:") >= 5 and "val2017 (default: from the" in text
    assert "0.672" not in text                         # no measured numbers that go stale


# ----------------------------------------------------------------------------- with a (tiny, untrained) model

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained small model saved like model.py saves one (plumbing only)."""
    if not (REPO / "model.py").exists():
        pytest.skip("model.py not present")
    from inference import import_network
    model_lib = import_network()
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model_lib.build_model(size=96, width=0.25).save(path)
    return path


def test_model_evaluation_and_unreadable_image_folder(tiny_model, synthetic, tmp_path):
    root, npy = synthetic
    result = run_script(EVALUATE, "--model", tiny_model, "--data", npy, "--coco-root", root, "--out",
                        tmp_path / "eval", "--limit", 6, "--pictures", 2, "--flip-test", "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["figures"] == 6 and metrics["decoding"] == "dark+flip" and 0 <= metrics["ap"] <= 1
    assert (tmp_path / "eval" / "worst.png").exists()
    # a folder of two images and one unreadable file
    folder = tmp_path / "photos"
    folder.mkdir()
    images = sorted((root / "images" / "train2017").glob("*.jpg"))[:2]
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "broken.jpg").write_bytes(b"garbage")
    out = tmp_path / "inference"
    result = run_script(EVALUATE, "--model", tiny_model, "--images", folder, "--out", out, "--bbox", "20,10,100,200")
    assert result.returncode == 0, result.stderr
    assert "1 unreadable" in result.stdout and "broken.jpg" in result.stderr
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions["images"]) == 2 and len(predictions["unreadable"]) == 1
    for entry in predictions["images"]:
        assert (out / entry["overlay"]).exists()
        (figure,) = entry["figures"]
        assert set(figure["keypoints"]) == set(predictions["joint_names"])
        xy = np.array([v[:2] for v in figure["keypoints"].values()])
        # the canvas covers the bbox centre +- 0.7 x its side (frame of side / 5): keypoints lie in it
        centre, half = np.array([70.0, 110.0]), 0.7 * 200 + 2
        assert np.all(np.abs(xy - centre) <= half)
    assert "could be read" in one_line_error(
        run_script(EVALUATE, "--model", tiny_model, "--images", folder / "broken.jpg", "--out", tmp_path / "o2",
                   "--quiet"))


@pytest.mark.parametrize("kind", ["tflite", "saved_model"])
def test_export_gives_the_same_keypoints(kind, tiny_model, synthetic, tmp_path):
    import cv2

    from inference import decode, export_model, exported_predictor, import_network, load_model_checked
    from figures import canvas_image, open_figures
    model_lib = import_network()
    model, predict = load_model_checked(str(tiny_model))
    path = export_model(model, kind, str(tmp_path))
    assert json.loads((tmp_path / "export.json").read_text())["input_size"] == 96
    figures = open_figures(str(synthetic[1]))
    canvases = np.stack([cv2.resize(canvas_image(r), (96, 96), interpolation=cv2.INTER_AREA) for r in figures[:6]])
    reference = decode(model_lib.predict_maps(model, canvases), 96, 96, "dark")
    exported = decode(exported_predictor(path)(None, canvases), 96, 96, "dark")
    assert np.abs(exported[..., :2] - reference[..., :2]).max() < 0.5
    np.testing.assert_allclose(exported[..., 2], reference[..., 2], atol=1e-3)


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
    import inference
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


def test_exported_model_mistakes_give_one_line(exports, synthetic, tmp_path):
    _, npy = synthetic
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "model.tflite").write_bytes((exports["tflite"] / "model.tflite").read_bytes())
    assert "export.json" in one_line_error(
        run_script(EVALUATE, "--model", lonely / "model.tflite", "--data", npy, "--out", tmp_path / "o"))
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer")
    (tmp_path / "export.json").write_text((exports["tflite"] / "export.json").read_text())
    assert "not a readable TFLite model" in one_line_error(
        run_script(EVALUATE, "--model", tmp_path / "junk.tflite", "--data", npy, "--out", tmp_path / "o"))
    assert "not an exported figure-pose model" in one_line_error(
        run_script(EVALUATE, "--model", lonely, "--data", npy, "--out", tmp_path / "o"))


def readme_tflite_example():
    """The fenced python block of README.md that starts with `# run_tflite.py`."""
    text = (REPO / "README.md").read_text()
    start = text.index("```python\n# run_tflite.py") + len("```python\n")
    return text[start:text.index("```", start)]


def test_readme_standalone_tflite_example_runs(exports, synthetic, tmp_path):
    """The README's standalone runner (NumPy, OpenCV, a TFLite interpreter; nothing of this
    repository) gives evaluate.py's keypoints with the same decoding, within 0.5 px."""
    import evaluate
    root, _ = synthetic
    script = tmp_path / "run_tflite.py"
    script.write_text(readme_tflite_example())
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
