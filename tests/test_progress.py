"""Progress that reads well in a log file: plain periodic lines with ETA (no control characters),
one line per epoch with the run's ETA."""
import io
import re

from conftest import REPO, run_script

from figure_pose.core.cli import LineProgress, duration


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_line_progress_prints_plain_lines_with_eta():
    clock, stream = FakeClock(), io.StringIO()
    bar = LineProgress(100, "figures", "fig", stream=stream, interval=30, clock=clock)
    for _ in range(40):
        clock.now += 1.0
        bar.update(1)
    bar.set_postfix(written=7)
    bar.close()
    bar.close()                                       # a second close prints nothing more
    lines = stream.getvalue().splitlines()
    assert lines == ["figures: 30/100 fig (30 %), 30 s, ETA 1 min 10 s",
                     "figures: 40/100 fig (40 %), 40 s, ETA 1 min 0 s, written 7"]
    assert "\r" not in stream.getvalue()
    assert [duration(s) for s in (0, 59.6, 61, 7380)] == ["0 s", "1 min 0 s", "1 min 1 s", "2 h 03 min"]


def test_epoch_clock_says_elapsed_and_eta_of_the_run():
    from figure_pose.training.callbacks import EpochClock
    clock, stream = FakeClock(), io.StringIO()
    callback = EpochClock(5, clock=clock, stream=stream)
    callback.on_train_begin()
    for epoch in (2, 3):                              # a run resumed at epoch 2 (counted from 0)
        callback.on_epoch_begin(epoch)
        clock.now += 60
        callback.on_epoch_end(epoch)
    first, second = stream.getvalue().splitlines()
    assert first.startswith("epoch 3/5: 1 min 0 s, elapsed 1 min 0 s, ETA 2 min 0 s (ends about ")
    assert second.startswith("epoch 4/5: 1 min 0 s, elapsed 2 min 0 s, ETA 1 min 0 s (ends about ")


def test_coco_process_progress_in_a_log_file(synthetic_coco, tmp_path):
    result = run_script(REPO / "coco_process.py", "--coco-root", synthetic_coco, "--out", tmp_path / "c.npy",
                        "--examples", "0", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    (last,) = [line for line in result.stderr.splitlines() if line.startswith("images: ")][-1:]
    assert re.fullmatch(r"images: (\d+)/\1 img \(100 %\), \d+ s, figures \d+", last), last


def test_tensorboard_logs_only_where_tensorflow_can_write_them(monkeypatch, capsys, tmp_path):
    """A JAX GPU box may have the tensorboard package but no TensorFlow, whose summary writer
    Keras' callback needs: the run goes on without tb/ and says why, instead of failing at epoch 1."""
    import importlib.util

    from figure_pose.training import callbacks
    real_find_spec = importlib.util.find_spec
    assert [type(c).__name__ for c in callbacks.tensorboard(str(tmp_path / "tb"))] == ["TensorBoard"]
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else real_find_spec(name, *a))
    assert callbacks.tensorboard(str(tmp_path / "tb")) == []
    assert "note: tensorflow not installed; no tb/ logs" in capsys.readouterr().out
