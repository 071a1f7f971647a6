"""Training runs that never lose work (issue 27): a non-finite loss stops the run before anything
of it is saved, a skipped float16 step is no failure, a run folder is never silently reused
(--overwrite starts afresh, a live run's lock refuses a second process), and SIGTERM ends a run
as Ctrl-C does: one line, the backups kept, resumable. The one-line refusals are rows of
tests/test_bad_inputs.py's table (cases_model.py, cases_evaluate.py)."""
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from conftest import REPO, read_log, small_config

from figure_pose.core.cli import InputError
from figure_pose.training.callbacks import Backup, NonFiniteTraining, SaveNetwork, StopOnNonFinite
from figure_pose.training.run_folder import FolderLock

import model as M
import figure_pose.training.network as N


def file_bytes(*paths):
    return [p.read_bytes() for p in paths]


class PoisonAfter(keras.callbacks.Callback):
    """A weight turned NaN after step 1 of `epoch` (what a diverging step does); keeps the bytes
    of the checkpoints and the backups as that epoch began."""

    def __init__(self, out, epoch):
        super().__init__()
        self.out, self.epoch, self.current, self.saved = out, epoch, -1, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch
        if epoch == self.epoch:
            self.saved = file_bytes(self.out / "best.keras", self.out / "last.keras", *sorted(
                (self.out / "backup").iterdir()))

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == 0:
            kernel = self.model.network.weights[0]
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


@pytest.fixture(scope="module")
def stopped_run(tiny_data, tmp_path_factory):
    """(folder, message, poison) of a 3-epoch run whose weights turn NaN in epoch 2 (0-based 1)."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    poison = PoisonAfter(out, 1)
    with pytest.raises(NonFiniteTraining) as stop:
        M.train(small_config(tiny_data, out), extra_callbacks=[poison])
    return out, str(stop.value), poison


def test_a_nan_loss_stops_the_run_before_anything_is_saved(stopped_run):
    """The step after the weights broke stops the run: one message with the epoch, the step, the
    causes and what to do; the checkpoints and backups are byte for byte those of epoch 1, log.csv
    and the pictures stop at epoch 1, and last.keras loads (finite)."""
    out, message, poison = stopped_run
    assert message == ("the training loss became nan in epoch 2/3, step 2/2; training stopped, nothing of it saved: "
                       "last.keras and backup/ hold epoch 1. Likely causes: a learning rate too high (peak lr 0.000354), "
                       "float16 overflow (--mixed-precision) or bad data; continue with --resume and a lower --lr")
    assert file_bytes(out / "best.keras", out / "last.keras", *sorted((out / "backup").iterdir())) == poison.saved
    assert [n for n, _ in Backup(str(out / "backup")).backups()] == [1]
    assert [r["epoch"] for r in read_log(out)] == ["0"]
    assert (out / "eval" / "0000_heatmap.png").exists() and not (out / "eval" / "0001_heatmap.png").exists()
    N.load_trained_model(str(out / "last.keras"))


def test_resume_continues_a_stopped_run(stopped_run, tiny_data, tmp_path):
    """--resume, as the message says, trains on from epoch 1's backup to the end."""
    out = tmp_path / "run"
    shutil.copytree(stopped_run[0], out)
    M.train(small_config(tiny_data, out, resume=True))
    assert [r["epoch"] for r in read_log(out)] == ["0", "1", "2"]
    assert np.isfinite([float(r["loss"]) for r in read_log(out)]).all()


def test_overwrite_starts_afresh_in_a_used_folder(stopped_run, tiny_data, tmp_path, capsys):
    """--overwrite deletes the old run's outputs first: only the new run's log rows, backups and pictures."""
    out = tmp_path / "run"
    shutil.copytree(stopped_run[0], out)
    (out / "eval" / "9999_heatmap.png").write_bytes(b"old")
    argv = ["--data", tiny_data, "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "4",
            "--size", "64", "--width", "0.25", "--seed", "5", "--run-eagerly", "--quiet"]
    M.main(argv + ["--overwrite"])
    assert [r["epoch"] for r in read_log(out)] == ["0"]
    assert [n for n, _ in Backup(str(out / "backup")).backups()] == [1]
    assert not (out / "eval" / "9999_heatmap.png").exists() and '"seed": 5' in (out / "config.json").read_text()
    with pytest.raises(SystemExit, match="holds a run .*--overwrite"):   # without it: refused
        M.main(argv)


def tiny_float16_fit(x, y, *callbacks):
    """fit 4 steps of a 2-layer network under mixed_float16 (Keras wraps its Adam in a LossScaleOptimizer);
    returns the network. The policy is float32 again afterwards."""
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        inputs = keras.Input((4,))
        net = keras.Model(inputs, keras.layers.Dense(1, dtype="float32")(keras.layers.Dense(8)(inputs)))
        net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        assert isinstance(net.optimizer, keras.optimizers.LossScaleOptimizer)
        net.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=list(callbacks))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return net


def test_a_step_loss_scaling_skips_is_no_failure(capsys):
    """float16 overflow: inputs of 1e5 overflow the first layer, the loss is nan at every step and
    the LossScaleOptimizer skips each (no update, a smaller scale). The run goes on with finite
    weights and says so once; a gradient overflow alone leaves the logged loss finite."""
    x = np.full((64, 4), 1e5, "float32")
    net = tiny_float16_fit(x, np.ones((64, 1), "float32"), StopOnNonFinite(1, 4))
    assert int(net.optimizer.iterations) == 0
    assert all(np.isfinite(w).all() for w in net.get_weights())
    assert capsys.readouterr().out == ("note: epoch 1: a non-finite loss (nan) from step 1 on; float16 loss scaling "
                                       "skipped those steps and the weights are finite\n")


def test_savers_refuse_non_finite_weights(tiny_data, tmp_path):
    """The second guard: last.keras and a backup are never written from NaN weights."""
    network = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    network.layers[0].kernel.assign(np.array([[np.nan], [1.0]], "float32"))
    trainer = SimpleNamespace(network=network, weights=network.weights)
    for saver, what in ((SaveNetwork(str(tmp_path / "last.keras"), str(tmp_path / "best.keras"), "v"), "last.keras"),
                        (Backup(str(tmp_path / "backup")), "backup of epoch 1")):
        saver.set_model(trainer)
        with pytest.raises(NonFiniteTraining, match=f"1 of 2 variables.*; .*{what} not written"):
            saver.on_epoch_end(0, {"v": 1.0})
    assert list(tmp_path.iterdir()) == []


def test_folder_lock_is_exclusive_and_names_its_owner(tmp_path):
    """flock(2) conflicts between two open files even in one process: the second holder is refused
    with the first's pid, and takes the lock once the first lets go."""
    first, second = FolderLock(str(tmp_path)), FolderLock(str(tmp_path))
    first.acquire()
    with pytest.raises(InputError, match=rf"--out .* is in use by another model.py run, .*\(pid {os.getpid()}\)"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_a_live_run_holds_its_folder_and_sigterm_ends_it_resumable(tiny_data, tmp_path, capsys):
    """A model.py process training into --out: a second run there is refused, with --resume and with
    --overwrite too, and changes nothing; SIGTERM (a scheduler's preemption) then ends it like Ctrl-C:
    one stderr line naming --resume, exit 143, complete backups, and --resume continues the run."""
    out = tmp_path / "run"
    argv = ["--data", tiny_data, "--out", str(out), "--epochs", "50", "--steps-per-epoch", "2", "--batch-size", "4",
            "--size", "64", "--width", "0.25", "--seed", "1", "--run-eagerly", "--quiet"]
    process = subprocess.Popen([sys.executable, str(REPO / "model.py"), *argv], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline and not Backup(str(out / "backup")).backups():
        time.sleep(0.01)
    config = (out / "config.json").read_text()
    for flag in ("--resume", "--overwrite"):
        with pytest.raises(SystemExit) as refused:
            M.main(argv + [flag])
        assert f"is in use by another model.py run, still training there (pid {process.pid})" in str(refused.value)
    assert (out / "config.json").read_text() == config and (out / "backup").is_dir()
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 143, stderr
    assert [line for line in stderr.splitlines() if line.strip()] == [
        "model.py: interrupted (SIGTERM); continue with --resume"]
    done = [n for n, _ in Backup(str(out / "backup")).backups()]
    assert done and len(read_log(out)) >= done[0]
    M.main([*argv[:5], str(done[0] + 1), *argv[6:], "--resume"])   # --epochs: one more than the backup holds
    assert [int(r["epoch"]) for r in read_log(out)] == list(range(done[0] + 1))


def test_a_sigterm_whose_exception_is_lost_still_stops_after_the_step():
    """A SIGTERM landing in a garbage-collection callback (JAX has one) loses the handler's exception;
    the signal is still recorded, StopOnSignal raises after the step, and nothing is printed for it."""
    import gc
    import io

    from figure_pose.core.cli import Terminated, sigterm_interrupts
    from figure_pose.training.callbacks import StopOnSignal

    def in_gc_callback(phase, info):
        if phase == "start":
            gc.callbacks.remove(in_gc_callback)
            os.kill(os.getpid(), signal.SIGTERM)   # handled here: Terminated raised inside the callback
    handler, hook = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    stderr, sys.stderr = sys.stderr, io.StringIO()
    try:
        with sigterm_interrupts() as received:
            gc.callbacks.append(in_gc_callback)
            gc.collect()                                 # the exception is lost in there
            assert received == ["SIGTERM"]
            with pytest.raises(Terminated, match="SIGTERM"):
                StopOnSignal(received).on_train_batch_end(0)
        printed = sys.stderr.getvalue()
    finally:
        sys.stderr = stderr
    assert "Terminated" not in printed, printed
    assert signal.getsignal(signal.SIGTERM) is handler and sys.unraisablehook is hook   # both restored
