"""Shared test fixtures: the real COCO slice beside the checkout, when present."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "coco-sample"


@pytest.fixture(scope="session")
def coco_sample():
    """Path of ../shared/data/coco-sample (real COCO train2017 slice); skip if absent."""
    if not (SHARED_SAMPLE / "annotations" / "person_keypoints_train2017.json").exists():
        pytest.skip(f"real COCO slice not found at {SHARED_SAMPLE} (needs ../shared beside the checkout)")
    return SHARED_SAMPLE


def run_script(*args, cwd=None):
    """Run a project script with this interpreter; returns the CompletedProcess."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def sample_figures(coco_sample, tmp_path_factory):
    """coco.npy of the real slice (13 joints, defaults), made once per test session."""
    out = tmp_path_factory.mktemp("real") / "coco.npy"
    result = run_script(REPO / "coco_process.py", "--coco-root", coco_sample, "--out", out,
                        "--examples", 0, "--quiet", "--workers", 2)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory):
    """A 60-image synthetic COCO train2017 folder (synthetic_coco.py), made once per session."""
    from synthetic_coco import make_synthetic_coco
    root = tmp_path_factory.mktemp("synthetic") / "coco"
    make_synthetic_coco(str(root), n_images=60, split="train2017", seed=0)
    return root


@pytest.fixture(scope="session")
def synthetic_figures(synthetic_coco, tmp_path_factory):
    """coco.npy of the 60-image synthetic sample (coco_process.py defaults), made once per session."""
    out = tmp_path_factory.mktemp("synthetic_npy") / "coco.npy"
    result = run_script(REPO / "coco_process.py", "--coco-root", synthetic_coco, "--out", out,
                        "--allow-multi-polygon", "--examples", 0, "--quiet", "--workers", 2)
    assert result.returncode == 0, result.stderr
    return out
