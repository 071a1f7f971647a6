"""A run folder a person can use: split.json says which images validated, evaluate.py --run scores
the held-out ones only, evaluating training figures warns, model.py --config reproduces a run."""
import json

import numpy as np
import pytest
from test_figure_dataset import write_figures

from figure_pose.data.figure_dataset import split_by_image

import evaluate
import model as M


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    """(data, run folder) of a 1-epoch run without --val-data (20 % of the images held out)."""
    data = str(write_figures(tmp_path_factory.mktemp("data") / "coco.npy", n=20, size=64))
    out = tmp_path_factory.mktemp("runs") / "held_out"
    M.main(["--data", data, "--out", str(out), "--size", "64", "--epochs", "1", "--batch-size", "4", "--width", "0.25",
            "--steps-per-epoch", "1", "--seed", "2", "--run-eagerly", "--quiet"])
    return data, out


def test_split_json_names_the_held_out_images(one_epoch_run):
    data, out = one_epoch_run
    split = json.loads((out / "split.json").read_text())
    image_ids = np.unique(np.load(data)["image_id"]).tolist()
    assert split["held_out"] and split["train_data"] == split["val_data"] == data
    assert sorted(split["train_image_ids"] + split["val_image_ids"]) == image_ids   # disjoint, complete
    _, val_idx = split_by_image(np.load(data)["image_id"], 0.2, 2)                  # --seed 2's 20 %
    assert split["val_image_ids"] == np.unique(np.load(data)["image_id"][val_idx]).tolist()
    assert len(split["val_image_ids"]) == round(0.2 * len(image_ids))


def test_evaluate_run_scores_only_held_out_images(one_epoch_run, capsys):
    data, out = one_epoch_run
    evaluate.main(["--run", str(out), "--pictures", "0", "--quiet"])
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    split = json.loads((out / "split.json").read_text())
    figures = np.load(data)
    held_out = np.isin(figures["image_id"], split["val_image_ids"])
    assert metrics["source"] == str(out / "best.keras") and metrics["data"] == data
    assert metrics["figures"] == int(held_out.sum()) and metrics["training_figures"] == 0
    assert metrics["baseline"]["label"] == "mean pose (training figures)"
    assert "warning" not in capsys.readouterr().err


def test_evaluating_training_figures_warns_with_the_count(one_epoch_run, tmp_path, capsys):
    data, out = one_epoch_run
    evaluate.main(["--model", str(out / "best.keras"), "--data", data, "--train-data", data,
                   "--out", str(tmp_path), "--pictures", "0", "--quiet"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: 20 of the 20 evaluated figures are of training images (in --train-data "
                        f"{data}): their scores are not a held-out measurement"]
    assert json.loads((tmp_path / "metrics.json").read_text())["training_figures"] == 20


def test_run_without_split_json_is_one_line(one_epoch_run, tmp_path):
    _, out = one_epoch_run
    old = tmp_path / "old_run"
    old.mkdir()
    (old / "config.json").write_text((out / "config.json").read_text())
    with pytest.raises(SystemExit, match="has no split.json .* give --data and --image-ids"):
        evaluate.main(["--run", str(old)])


def test_config_reproduces_a_run_and_later_flags_win(one_epoch_run, tmp_path):
    _, out = one_epoch_run
    original = json.loads((out / "config.json").read_text())
    args = M.parse_args(["--config", str(out / "config.json"), "--out", str(tmp_path / "again"), "--epochs", "3"])
    assert args.epochs == 3 and args.out == str(tmp_path / "again")          # the command line wins
    for key in ("data", "batch_size", "width", "steps_per_epoch", "seed", "lr", "loss", "arch"):
        assert getattr(args, key) == original[key], key
    assert args.flip == original["augment"]["flip"] and args.quiet
    # the reproduction trains the same first epoch: same split, same loss
    M.main(["--config", str(out / "config.json"), "--out", str(tmp_path / "again")])
    again = json.loads((tmp_path / "again" / "split.json").read_text())
    assert again == json.loads((out / "split.json").read_text())
    first, second = (np.genfromtxt(d / "log.csv", delimiter=",", names=True) for d in (out, tmp_path / "again"))
    assert float(second["loss"]) == pytest.approx(float(first["loss"]), rel=1e-4)


def test_config_mistakes_are_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text("[1, 2]")
    for argv, message in (([], "give --out"), (["--out", str(tmp_path / "o")], "not the config.json"),
                          (["--out", str(tmp_path / "o"), "--config", str(tmp_path / "none.json")], "cannot read")):
        with pytest.raises(SystemExit):
            M.parse_args(["--config", str(tmp_path / "config.json"), *argv])
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("model.py: error: --config") and message in line


def test_other_data_with_the_same_image_ids_is_not_called_training(one_epoch_run, tmp_path, capsys):
    """Ids are compared only for figures of the same photos: the synthetic splits reuse image ids."""
    data, out = one_epoch_run
    other = str(write_figures(tmp_path / "other.npy", n=20, size=64, seed=5))
    assert set(np.load(other)["image_id"]) & set(np.load(data)["image_id"])
    evaluate.main(["--model", str(out / "best.keras"), "--data", other, "--train-data", data,
                   "--out", str(tmp_path / "e"), "--pictures", "0", "--quiet"])
    assert "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["training_figures"] == 0
