"""Bad input and faults (issue 11): a user mistake or a broken input is one line on stderr
and a non-zero exit, never a traceback, and leaves nothing that looks complete behind; a
broken item inside a dataset is skipped, counted and named; a killed export leaves nothing
that loads as an export.

CASES is one table across the four scripts. Its rows live beside the files they need, one
module per script (tests/cases_<script>.py: CASES, OUT, build_inputs(tmp) and, where a row
needs more than its message checked, check_after); the row shape and the runner are in
tests/bad_input_table.py.
"""
import os
import re
import signal
import subprocess
import sys
import time

import cases_coco_process
import cases_download
import cases_evaluate
import cases_model
import pytest

from bad_input_table import REPO, fill, program, run_main

TABLES = {"coco_process": cases_coco_process, "download_coco.sh": cases_download, "evaluate": cases_evaluate,
          "model": cases_model}
CASES = [case for table in TABLES.values() for case in table.CASES]


@pytest.fixture(scope="session")
def inputs_of(tmp_path_factory):
    """inputs_of(script): the {placeholder: path} of that script's rows, built once, on first use."""
    built = {}

    def get(script):
        if script not in built:
            built[script] = TABLES[script].build_inputs(tmp_path_factory.mktemp(f"bad_inputs_{script}"))
        return built[script]
    return get


@pytest.mark.parametrize("case", CASES, ids=[f"{program(c.script)}: {c.id}" for c in CASES])
def test_bad_input(case, inputs_of, tmp_path, capsys):
    table, inputs = TABLES[case.script], inputs_of(case.script)
    values = dict(inputs, tmp=str(tmp_path), out=str(tmp_path / table.OUT))
    argv = [fill(str(a), values) for a in case.argv]
    status, out, err = run_main(case.script, argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    prefix = f"{program(case.script)}: " + ("error: " if case.status else "")
    assert lines[0].startswith(prefix), lines[0]
    assert re.search(case.stderr, lines[0]), f"{lines[0]!r} does not match {case.stderr!r}"
    assert status == case.status, f"exit status {status}, expected {case.status}: {lines[0]}"
    for path in case.absent:
        assert not os.path.exists(fill(path, values)), f"{fill(path, values)} exists after: {lines[0]}"
    if hasattr(table, "check_after"):
        table.check_after(case, argv, out, inputs)


def test_table_covers_the_four_scripts():
    """At least 40 rows across the four scripts, every script with rows, unique ids, every
    broken dataset variant of coco_process.py used by a row."""
    per_script = {script: len(table.CASES) for script, table in TABLES.items()}
    assert sum(per_script.values()) >= 40 and min(per_script.values()) >= 10, per_script
    ids = [(c.script, c.id) for c in CASES]
    assert len(set(ids)) == len(ids)
    used = {a[1:-1] for c in cases_coco_process.CASES for a in c.argv if a.startswith("{")}
    assert set(cases_coco_process.VARIANTS) <= used, set(cases_coco_process.VARIANTS) - used


# ----------------------------------------------------------------------------- killed exports

def loads_as_export(out):
    """True if anything at an export's final path loads (a SavedModel folder or a .tflite file)."""
    import tensorflow as tf
    for path in (out / "saved_model", out / "model.tflite"):
        if not path.exists():
            continue
        try:
            if path.suffix == ".tflite":
                tf.lite.Interpreter(model_path=str(path)).allocate_tensors()
            else:
                tf.saved_model.load(str(path))
            return True
        except Exception:  # noqa: BLE001 - anything that fails to load is not an export
            pass
    return False


@pytest.mark.parametrize("kind", ["saved_model", "tflite"])
def test_export_interrupted_after_writing_leaves_no_export(kind, inputs_of, tmp_path, capsys, monkeypatch):
    """Interrupt the export once Keras has written the SavedModel (of the export itself, or the
    one tflite converts from): nothing at the final path, no export.json."""
    import keras
    real_export = keras.Model.export

    def export_then_interrupt(self, path, *args, **kwargs):
        real_export(self, path, *args, **kwargs)
        assert os.path.isdir(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "export", export_then_interrupt)
    out = tmp_path / "export"
    status, _, err = run_main("evaluate", ["--model", inputs_of("evaluate")["model"], "--export", kind, "--out", str(out)], capsys)
    assert status == 1 and err.strip() == "evaluate.py: interrupted"
    assert not (out / "saved_model").exists() and not (out / "model.tflite").exists()
    assert not (out / "export.json").exists()
    assert not loads_as_export(out)


def test_export_killed_mid_write_leaves_no_export(inputs_of, tmp_path, capsys):
    """kill -9 a real export while it writes its folder; the next export clears the leftover."""
    out = tmp_path / "export"
    partial = out / "saved_model.partial"
    argv = [sys.executable, str(REPO / "evaluate.py"), "--model", inputs_of("evaluate")["model"], "--export", "saved_model",
            "--out", str(out)]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not partial.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the export finished before it could be killed"
    assert partial.exists()
    assert not (out / "saved_model").exists() and not (out / "export.json").exists()
    assert not loads_as_export(out)
    status, _, err = run_main("evaluate", argv[2:], capsys)
    assert status == 0, err
    assert not partial.exists() and loads_as_export(out) and (out / "export.json").exists()


# ----------------------------------------------------------------------------- model.py's rules, stated

def test_model_help_states_the_ranges_and_the_resume_rules(capsys):
    import model
    with pytest.raises(SystemExit) as done:
        model.main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in (">= 1", "> 0", "multiple of 32", "[0, 1]", "no config.json", "no backup"):
        assert phrase in text, phrase


def test_resume_config_lists_model_and_data_keys(inputs_of):
    """config.json of a run holds every key --resume compares (the identity of model and data)."""
    import json

    from figure_pose.training.run_folder import RUN_IDENTITY
    with open(os.path.join(inputs_of("model")["run"], "config.json")) as f:
        config = json.load(f)
    assert set(RUN_IDENTITY) <= set(config), set(RUN_IDENTITY) - set(config)
    assert config["joints"] == 13 and config["input_size"] == 64
