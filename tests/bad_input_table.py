"""The shape of a row of the bad-input table (issue 11) and the runner every row goes through.

A row names the script, its argv, the exit status, a regex the single stderr line must
match, and the paths that must not exist afterwards. Argv items and paths may hold
{placeholders}: {tmp} and {out} (this test's folder and a not-yet-existing output in it)
and every key of the script's inputs (built by `build_inputs(tmp)` in tests/cases_<script>.py).
Python scripts run in-process through `main(argv)` so the table stays fast; the shell
script runs as a process.
"""
import importlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    id: str
    script: str               # module name ("evaluate") or shell script ("download_coco.sh")
    argv: list
    status: int               # expected exit status (usage errors: 2, input errors: 1, skips: 0)
    stderr: str               # regex (re.search) the one stderr line must match
    absent: tuple = ("{out}",)  # must not exist afterwards: by default a failed run writes no --out


def program(script):
    """The name a script prints before its messages: 'evaluate.py', 'download_coco.sh'."""
    return script if script.endswith(".sh") else f"{script}.py"


def run_main(script, argv, capsys):
    """(exit status, stdout, stderr) of the script run on argv, as a shell would see them."""
    if script.endswith(".sh"):
        env = dict(os.environ, DOWNLOAD_COCO_RETRY_DELAY="0", NO_PROXY="*", no_proxy="*")
        done = subprocess.run([str(REPO / script), *argv], capture_output=True, text=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=60)
        return done.returncode, done.stdout, done.stderr
    module = importlib.import_module(script)
    capsys.readouterr()
    try:
        module.main(argv)
        status = 0
    except SystemExit as done:
        status = done.code
        if isinstance(status, str):       # sys.exit("message"): the interpreter prints it and exits 1
            print(status, file=sys.stderr)
            status = 1
        status = status or 0
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def fill(text, values):
    return text.format_map(values)


def write(path, text):
    """Write text to path (making its folder); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
