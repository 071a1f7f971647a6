"""model.py's finished runs, resumed and fine-tuned: the logged val PCK is the checkpoint's,
--init-weights starts from the source, --resume after an in-process kill, a kill -9 and a
damaged backup. A file of its own (one shared 2-epoch run, `two_epoch_run`) so that
`make test` runs it beside test_model.py."""
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import REPO, read_log, small_config

from figure_pose.core.confidence_maps import ARCH_CODECS
from figure_pose.core.figures import canvas_image
from figure_pose.core.metrics import figure_norm_size, pck
from figure_pose.data.figure_dataset import FigureFile, split_by_image
from figure_pose.training.callbacks import Backup

import model as M
import figure_pose.training.network as N

SMALL = dict(n_joints=13, size=64, width=0.25)


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
    argv = ["--data", tiny_data, "--out", str(out), "--epochs", "3", "--steps-per-epoch", "2", "--batch-size", "4",
            "--size", "64", "--width", "0.25", "--seed", "1", "--run-eagerly", "--quiet"]
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
