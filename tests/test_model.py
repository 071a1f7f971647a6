"""model.py: its flags (train_config), learning, the run's summary lines, mixed precision. The loss
and schedule: test_training.py; finished runs resumed and fine-tuned: test_resume.py; several
devices and the JAX backend: test_devices.py."""
import sys
from dataclasses import asdict, fields

import keras
import numpy as np
import pytest
from conftest import read_log, small_config
from test_figure_dataset import write_figures

from figure_pose.core.cli import InputError
from figure_pose.data.figure_dataset import NO_AUGMENT, Augment
from figure_pose.training.train_config import TrainConfig, build_parser, config_from_args

import model as M
import figure_pose.training.network as N

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


def test_the_width_default_follows_the_network():
    """--width's default is each network's measured best (simple 0.5; the backbone's decoder 1), a
    given --width wins, and the resolved width is what the run records."""
    def width(*argv):
        return config_from_args(M.parse_args(list(argv)), terminal=False).width
    assert width() == 0.5 and width("--backbone", "mobilenet_v2") == 1.0
    assert width("--backbone", "mobilenet_v2", "--width", "0.5") == 0.5 and width("--width", "2") == 2.0
    assert asdict(TrainConfig(backbone="mobilenet_v2"))["width"] == 1.0


# ----------------------------------------------------------------------------- learning, from the command line


def test_a_run_that_does_not_learn_says_so(tiny_data, tmp_path, capsys):
    """A learning rate of ~0 never leaves the untrained maps: one warning line a quarter of the way
    (after epoch 1 of 4), and the summary line gives val PCK@0.2 beside the baseline."""
    M.main(["--data", tiny_data, "--out", str(tmp_path / "run"), "--epochs", "4", "--steps-per-epoch", "1",
            "--batch-size", "4", "--size", "64", "--width", "0.25", "--lr", "1e-12", "--seed", "1", "--run-eagerly",
            "--quiet"])
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
    assert final > baseline + 0.01, (final, baseline)  # 0.951 vs 0.884 on 2 CPU cores (291e4a0)
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
                                   epochs=6, augment=NO_AUGMENT))
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
    model = N.load_trained_model(str(tmp_path / "mp" / "last.keras"))
    assert model.get_layer("maps").compute_dtype == "float32"
    assert any(layer.compute_dtype == "bfloat16" for layer in model.layers)
    one_image = str(write_figures(tmp_path / "one_image.npy", n=2, size=64))  # refused once the policy is set
    with pytest.raises(InputError, match="one image"):
        M.train(small_config(one_image, tmp_path / "fp32"))
    assert keras.mixed_precision.dtype_policy().name == "float32"


# ----------------------------------------------------------------------------- devices (the runs: test_devices.py)


def test_multiworker_on_tensorflow_is_a_clear_error(tiny_data, tmp_path):
    message = one_line_exit(["--data", tiny_data, "--out", str(tmp_path / "run"), "--distribute", "multiworker"])
    assert message.startswith("model.py: error: --distribute multiworker runs on the JAX backend")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
