"""model.py: its flags (train_config), learning, the run's numbers, resume after a kill, fine-tuning
(--init-weights), mixed precision. The loss and schedule: test_training.py; several devices and the
JAX backend: test_devices.py."""
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, fields

import keras
import numpy as np
import pytest
from conftest import REPO
from test_figure_dataset import write_figures

from callbacks import Backup
from cli import InputError
from confidence_maps import ARCH_CODECS
from figure_dataset import NO_AUGMENT, Augment, FigureFile, split_by_image
from figures import canvas_image
from metrics import figure_norm_size, pck
from train_config import TrainConfig, build_parser, config_from_args

import model as M
import network as N

SMALL = dict(n_joints=13, size=64, width=0.25)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A 16-figure coco.npy (64 x 64 canvases, 8 images)."""
    return str(write_figures(tmp_path_factory.mktemp("data") / "coco.npy", n=16, size=64))


def small_config(data, out, **kw):
    base = dict(data=data, out=str(out), epochs=3, batch_size=4, size=0, width=0.25, seed=1,
                steps_per_epoch=2, verbose=0)
    return TrainConfig(**{**base, **kw})


def read_log(out):
    with open(out / "log.csv") as f:
        return list(csv.DictReader(f))

# ----------------------------------------------------------------------------- the flags


def help_blocks(text):
    """{first option string: its --help text, whitespace collapsed} of an argparse --help output."""
    blocks, current = {}, None
    for line in text.split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            blocks[current] = ""
        if current:
            blocks[current] += " " + line.strip()
    return {flag: " ".join(block.split()) for flag, block in blocks.items()}


def test_help_explains_every_flag(capsys):
    """Every flag of the parser is in --help with a help text and, where cli.HelpFormatter states one
    (not None, False or 0, and not named in the help already), its default. The flags' defaults are
    TrainConfig's: parsing no flags gives TrainConfig()."""
    with pytest.raises(SystemExit) as done:
        M.main(["--help"])
    assert done.value.code == 0
    blocks = help_blocks(capsys.readouterr().out)
    actions = [a for a in build_parser("model.py", "")._actions if a.dest != "help"]
    assert len(actions) == len(fields(TrainConfig)) - 2 + len(fields(Augment)) + 4  # augment, verbose: no flag
    for action in actions:
        flag = action.option_strings[0]
        assert flag in blocks and action.help.strip(), flag
        stated = action.default not in (None, False) and "default" not in action.help
        assert (f"(default: {action.default})" in blocks[flag]) == stated, (flag, blocks[flag])
    assert config_from_args(M.parse_args([]), terminal=True) == TrainConfig()
    quiet = config_from_args(M.parse_args(["--quiet", "--worker-processes", "--no-augment"]), terminal=True)
    assert (quiet.verbose, quiet.processes, quiet.augment) == (2, True, NO_AUGMENT)
    assert set(asdict(TrainConfig())["augment"]) == {f.name for f in fields(Augment)}

# ----------------------------------------------------------------------------- learning, from the command line


def test_a_run_that_does_not_learn_says_so(tiny_data, tmp_path, capsys):
    """A learning rate of ~0 never leaves the untrained maps: one warning line a quarter of the way
    (after epoch 1 of 4), and the summary line gives val PCK@0.2 beside the baseline."""
    M.main(["--data", tiny_data, "--out", str(tmp_path / "run"), "--epochs", "4", "--steps-per-epoch", "2",
            "--batch-size", "4", "--size", "64", "--width", "0.25", "--lr", "1e-12", "--seed", "1", "--quiet"])
    lines = capsys.readouterr().out.splitlines()
    warnings = [line for line in lines if line.startswith("warning: not learning yet: val PCK@0.2")]
    assert len(warnings) == 1 and "after 1 of 4 epochs" in warnings[0]
    rows = read_log(tmp_path / "run")
    final, baseline = float(rows[-1]["val_pck@0.2"]), float(rows[-1]["baseline_pck@0.2"])
    assert final < baseline
    assert f"summary: val PCK@0.2 {final:.3f} after 4 epochs" in lines[-1]
    assert f"does NOT beat the mean-pose baseline {baseline:.3f}" in lines[-1]


def test_default_recipe_beats_the_mean_pose_on_the_synthetic_sample(synthetic_figures, tmp_path, capsys):
    """The defaults (sqrt-scaled lr, warm-up + cosine, --min-steps, SimpleBaseline's augmentation),
    scaled down only in input size and length to fit a test (64 px, 6 epochs, --min-steps 480): the
    held-out val PCK@0.2 beats the mean pose (0.884 on these regular figures) and the summary says so."""
    out = tmp_path / "run"
    M.main(["--data", str(synthetic_figures), "--out", str(out), "--size", "64", "--epochs", "6",
            "--min-steps", "480", "--quiet"])
    text = capsys.readouterr().out
    assert "6 epochs x 80 steps of 8 = 480 steps; Adam, peak lr 0.0005" in text
    rows = read_log(out)
    final, baseline = float(rows[-1]["val_pck@0.2"]), float(rows[-1]["baseline_pck@0.2"])
    assert final > baseline + 0.01, (final, baseline)  # 0.910 vs 0.884 on 2 CPU cores
    assert f"summary: val PCK@0.2 {final:.3f} after 6 epochs" in text and "beats the mean-pose baseline" in text


def one_line_exit(argv):
    """The message model.py's main exits with (sys.exit(message): exit status 1)."""
    with pytest.raises(SystemExit) as done:
        M.main(argv)
    message = str(done.value.code)
    assert "\n" not in message and message.startswith("model.py: error:"), message
    return message


def test_missing_or_foreign_data_is_one_line(tmp_path):
    foreign = tmp_path / "foreign.npy"
    np.save(foreign, np.arange(5))
    for path in (tmp_path / "missing.npy", foreign):
        assert str(path) in one_line_exit(["--data", str(path), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_mixed_precision_trains_and_does_not_leak(tiny_data, tmp_path):
    """bfloat16 compute on the CPU (float16 on a GPU); float32 maps, falling loss; the next run in the
    process sets float32 first thing (here one refused right after)."""
    history = M.train(small_config(tiny_data, tmp_path / "mp", mixed_precision=True, lr=2e-3,
                                   epochs=4, augment=NO_AUGMENT))
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
    model = N.load_trained_model(str(tmp_path / "mp" / "last.keras"))
    assert model.get_layer("maps").compute_dtype == "float32"
    assert any(layer.compute_dtype == "bfloat16" for layer in model.layers)
    one_image = str(write_figures(tmp_path / "one_image.npy", n=2, size=64))  # refused once the policy is set
    with pytest.raises(InputError, match="one image"):
        M.train(small_config(one_image, tmp_path / "fp32"))
    assert keras.mixed_precision.dtype_policy().name == "float32"


# ----------------------------------------------------------------------------- a finished run, resumed, fine-tuned


@pytest.fixture(scope="module")
def two_epoch_run(tiny_data, tmp_path_factory):
    """A finished 2-epoch run of small_config (backups after epoch 1 and 2) and its log rows; the
    runs below resume it, continue it or start from it, always within its 2 epochs (same schedule)."""
    out = tmp_path_factory.mktemp("two_epochs") / "run"
    M.train(small_config(tiny_data, out, epochs=2))
    return out, read_log(out)


def val_pck_of(checkpoint, data, seed):
    """val PCK@0.2 of a .keras file recomputed on the host: the figures of the seeded 20 % of --data's
    images that model.py holds out, their stored canvases, argmax + quarter-pixel decoding of the main maps."""
    _, val_idx = split_by_image(FigureFile(data).small_fields()["image_id"], 0.2, seed)
    records = np.load(data)[val_idx]
    maps = N.predict_maps(N.load_trained_model(str(checkpoint)), np.stack([canvas_image(r) for r in records]))
    xy = ARCH_CODECS["simple"].decode(maps, refine="quarter")[..., :2]
    return pck(xy, records["keypoints"], figure_norm_size(records[0]["canvas_size"]), 0.2)


def test_logged_val_pck_is_the_pck_of_the_checkpoint(two_epoch_run, tiny_data):
    """log.csv's val PCK@0.2 of the last epoch = last.keras scored on the held-out figures on the host;
    its mean-pose baseline = the training figures' mean pose scored the same way."""
    out, rows = two_epoch_run
    assert float(rows[-1]["val_pck@0.2"]) == pytest.approx(val_pck_of(out / "last.keras", tiny_data, 1), abs=1e-6)
    train_idx, val_idx = split_by_image(FigureFile(tiny_data).small_fields()["image_id"], 0.2, 1)
    keypoints = np.load(tiny_data)["keypoints"]
    mean_xy = keypoints[train_idx, :, :2].mean(axis=0)      # every joint labelled in these figures
    baseline = pck(np.broadcast_to(mean_xy, (len(val_idx), 13, 2)), keypoints[val_idx], figure_norm_size(64), 0.2)
    assert [float(r["baseline_pck@0.2"]) for r in rows] == pytest.approx([baseline] * 2, abs=1e-6)


class StopAtTrainBegin(Exception):
    """Raised by FirstWeights once it has seen the weights a run starts from."""


class FirstWeights(keras.callbacks.Callback):
    """Record the network's weights and the optimiser step when fit starts, then stop the run."""

    def on_train_begin(self, logs=None):
        self.weights = self.model.network.get_weights()
        self.step = int(self.model.optimizer.iterations)
        raise StopAtTrainBegin


def test_init_weights_starts_from_the_source_network(two_epoch_run, tiny_data, tmp_path):
    """--init-weights: the new run's network holds the source's weights when training starts, at step 0.
    (A source of another width is refused in one line: tests/cases_model.py.)"""
    source = two_epoch_run[0] / "best.keras"
    first = FirstWeights()
    with pytest.raises(StopAtTrainBegin):
        M.train(small_config(tiny_data, tmp_path / "fine_tuned", init_weights=str(source), seed=2),
                extra_callbacks=[first])
    expected = N.load_trained_model(str(source)).get_weights()
    assert first.step == 0 and len(first.weights) == len(expected)
    for got, want in zip(first.weights, expected):
        np.testing.assert_array_equal(got, want)
    keras.utils.set_random_seed(2)
    fresh = N.build_model("simple", **SMALL).get_weights()
    assert not all(np.array_equal(a, b) for a, b in zip(fresh, expected))


class KillAfter(keras.callbacks.Callback):
    """Simulate a kill: raise in the middle of epoch `epoch`."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt("killed")


def test_resume_continues_the_same_run(two_epoch_run, tiny_data, tmp_path):
    """Killed in epoch 2 then resumed: the log continues and ends exactly where the unbroken
    two_epoch_run ends: the same batches in the same order (fit's own shuffle is off), the
    schedule continues at its step, Dropout's random state comes back with the backup."""
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        M.train(small_config(tiny_data, out, epochs=2), extra_callbacks=[KillAfter(epoch=1, batch=0)])
    assert [r["epoch"] for r in read_log(out)] == ["0"]
    M.train(small_config(tiny_data, out, epochs=2, resume=True))
    rows, unbroken = read_log(out), two_epoch_run[1]
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert [(r["loss"], r["val_loss"]) for r in rows] == [(r["loss"], r["val_loss"]) for r in unbroken]
    for name in ("best.keras", "last.keras", "curves.png", "eval/0001_heatmap.png",
                 "eval/0001_overlap.png", "eval/0001_img_GT.png", "eval/0001_heatmap_GT.png"):
        assert (out / name).exists(), name
    assert float(rows[-1]["val_pck@0.2"]) == pytest.approx(val_pck_of(out / "last.keras", tiny_data, 1), abs=1e-6)
    assert rows[-1]["baseline_pck@0.2"] == unbroken[-1]["baseline_pck@0.2"]


def test_killed_mid_epoch_then_resumed(tiny_data, tmp_path, capsys):
    """kill -9 a real run (a process: the kill is the point) once log.csv has its first row; --resume
    finishes the same 3 epochs, log.csv holds each epoch once, and a further --resume has nothing to do."""
    out = tmp_path / "run"
    argv = ["--data", tiny_data, "--out", str(out), "--epochs", "3", "--steps-per-epoch", "20", "--batch-size", "4",
            "--size", "64", "--width", "0.25", "--seed", "1", "--quiet"]
    process = subprocess.Popen([sys.executable, str(REPO / "model.py"), *argv], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline and len(read_log(out) if (out / "log.csv").exists()
                                                                   else []) < 1:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert [r["epoch"] for r in read_log(out)] == ["0"]
    M.main(argv + ["--resume"])
    assert [r["epoch"] for r in read_log(out)] == ["0", "1", "2"]
    assert [n for n, _ in Backup(str(out / "backup")).backups()] == [3, 2]
    N.load_trained_model(str(out / "last.keras"))
    capsys.readouterr()
    M.main(argv + ["--resume"])
    assert "nothing to do" in capsys.readouterr().out
    assert [r["epoch"] for r in read_log(out)] == ["0", "1", "2"]


def half_write_newest_backup(out):
    """What a kill while the epoch-2 backup was written leaves: log.csv has epoch 1's row (the
    backup is the last callback), and only a half-written temporary file instead of backup 2."""
    backups = Backup(str(out / "backup"))
    newest = backups.backups()[0][1]
    data = open(newest, "rb").read()
    os.remove(newest)
    (out / "backup" / ("partial" + Backup.SUFFIX)).write_bytes(data[:len(data) // 2])


def truncate_newest_backup(out):
    """The newest backup itself cut short (a full disk, or a writer without temp + rename)."""
    newest = Backup(str(out / "backup")).backups()[0][1]
    data = open(newest, "rb").read()
    open(newest, "wb").write(data[:len(data) // 2])


@pytest.mark.parametrize("damage", [half_write_newest_backup, truncate_newest_backup])
def test_resume_falls_back_to_the_last_complete_backup(damage, two_epoch_run, tiny_data, tmp_path, capsys):
    """Killed while the newest backup was written: --resume starts from the one before, trains
    epoch 2 again exactly as it went the first time (same loss), and the log continues."""
    source, first_rows = two_epoch_run
    out = tmp_path / "run"
    shutil.copytree(source, out)
    damage(out)
    capsys.readouterr()
    M.train(small_config(tiny_data, out, epochs=2, resume=True))
    notes = capsys.readouterr().out
    assert ("skipped the broken backup" in notes) == (damage is truncate_newest_backup), notes
    rows = read_log(out)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert [(r["loss"], r["val_loss"]) for r in rows] == [(r["loss"], r["val_loss"]) for r in first_rows]
    assert [n for n, _ in Backup(str(out / "backup")).backups()] == [2, 1]
    assert not (out / "backup" / ("partial" + Backup.SUFFIX)).exists()

# ----------------------------------------------------------------------------- devices (the runs: test_devices.py)


def test_multiworker_on_tensorflow_is_a_clear_error(tiny_data, tmp_path):
    message = one_line_exit(["--data", tiny_data, "--out", str(tmp_path / "run"), "--distribute", "multiworker"])
    assert message.startswith("model.py: error: --distribute multiworker runs on the JAX backend")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
