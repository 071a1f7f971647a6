"""The README's main job, end to end: synthetic COCO -> figures -> model.py -> evaluate.py.

Runs `run_sample.sh` with its default settings (a few minutes on 2 cores), so this test
is what proves the demo's claim: a model trained by model.py evaluates, through
evaluate.py, to PCK@0.1 >= 0.9 on held-out synthetic figures and beats the mean pose.
"""
import json
import os
import subprocess
import sys

from conftest import REPO


def test_run_sample_trains_a_model_that_beats_the_mean_pose(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, DATA=str(tmp_path / "sample"), RUN=str(tmp_path / "run"))
    result = subprocess.run(["bash", str(REPO / "run_sample.sh")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(tmp_path / "run" / "eval" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["figures"] > 100
    assert metrics["pck@0.1"] >= 0.9
    assert metrics["pck@0.1"] > metrics["baseline"]["pck@0.1"] + 0.2
    assert metrics["ap"] > metrics["baseline"]["ap"] + 0.3
    for name in ("examples.png", "worst.png", "pck_per_joint.png", "keypoints_val2017_results.json"):
        assert (tmp_path / "run" / "eval" / name).exists(), name
    assert "pck@0.1" in result.stdout and "done in" in result.stdout   # the table is printed
