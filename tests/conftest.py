"""Shared test fixtures: the real COCO slice beside the checkout, when present, and a synthetic sample.

The coco.npy fixtures run coco_process.main in this process (`process_coco`): a subprocess
would pay the interpreter and import start-up again for nothing a test looks at.
"""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "coco-sample"
# The files that take 20 s or more, longest first (`pytest --durations=0` at 11903be, summed per
# file: 288, 205, 98, 84, 62, 57, 32, 25 and 23 s on 2 cores; test_stops.py, added since, about
# 30 s). `make test` (pytest-xdist --dist loadfile --no-loadscope-reorder) hands whole files to its
# workers in collection order, so these start first and the last files handed out are short ones:
# no worker waits long at the end for the other (longest-first scheduling).
LONG_FILES = ("test_end_to_end.py", "test_devices.py", "test_model.py", "test_resume.py", "test_bad_inputs.py",
              "test_evaluate.py", "test_training.py", "test_stops.py", "test_run_folder.py", "test_photos.py")


def pytest_configure(config):
    """Under pytest-xdist (`make test`: one worker per core) every worker, and the scripts it
    starts, computes with one TensorFlow thread: a worker per core with the default thread pools
    oversubscribes the cores (two runs side by side on 2 cores: 185 -> 146 ms a step, 17 % fewer
    CPU-seconds). A value the environment already sets is kept."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            os.environ.setdefault(name, "1")


def pytest_collection_modifyitems(items):
    """Collect LONG_FILES first, in their order; every file keeps its own test order."""
    items.sort(key=lambda item: LONG_FILES.index(item.path.name) if item.path.name in LONG_FILES
               else len(LONG_FILES))


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


def process_coco(coco_root, out, *flags):
    """coco_process.main in this process: --coco-root coco_root --out out, quiet, no examples,
    one worker, then `flags` (a later flag wins). Returns out; a failed run raises SystemExit."""
    import coco_process
    coco_process.main(["--coco-root", str(coco_root), "--out", str(out), "--examples", "0", "--quiet",
                       "--workers", "1", *map(str, flags)])
    return out


@pytest.fixture(scope="session")
def sample_figures(coco_sample, tmp_path_factory):
    """coco.npy of the real slice (13 joints, defaults), made once per test session."""
    return process_coco(coco_sample, tmp_path_factory.mktemp("real") / "coco.npy")


@pytest.fixture(scope="session")
def synthetic_sample(tmp_path_factory):
    """(folder, counts) of a 60-image synthetic COCO train2017 sample (synthetic_coco.py, seed 0),
    made once per session; counts as make_synthetic_coco returns them."""
    from synthetic_coco import make_synthetic_coco
    root = tmp_path_factory.mktemp("synthetic") / "coco"
    counts = make_synthetic_coco(str(root), n_images=60, split="train2017", seed=0)
    return root, counts


@pytest.fixture(scope="session")
def synthetic_coco(synthetic_sample):
    """The folder of the 60-image synthetic COCO train2017 sample (synthetic_sample)."""
    return synthetic_sample[0]


@pytest.fixture(scope="session")
def synthetic_figures(synthetic_coco, tmp_path_factory):
    """coco.npy of the 60-image synthetic sample (coco_process.py defaults but
    --allow-multi-polygon), made once per session."""
    return process_coco(synthetic_coco, tmp_path_factory.mktemp("synthetic_npy") / "coco.npy", "--allow-multi-polygon")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A 16-figure coco.npy of random-noise figures (64 x 64 canvases, 8 images), for runs that
    test the machinery rather than learning."""
    from synthetic_coco import random_figures_file
    return str(random_figures_file(tmp_path_factory.mktemp("tiny") / "coco.npy", n=16, size=64, seed=0))


def small_config(data, out, **kw):
    """A TrainConfig of a few seconds' run on tiny_data (64 px, width 0.25, 3 epochs x 2 steps of 4),
    run eagerly: tracing the training graph would take most of such a run (the real-length runs,
    the demo and the default recipe, train from the traced graph)."""
    from figure_pose.training.train_config import TrainConfig
    base = dict(data=data, out=str(out), epochs=3, batch_size=4, size=0, width=0.25, seed=1,
                steps_per_epoch=2, verbose=0, run_eagerly=True)
    return TrainConfig(**{**base, **kw})


def read_log(out):
    """The rows of a run's log.csv, as dicts of strings."""
    with open(Path(out) / "log.csv") as f:
        return list(csv.DictReader(f))
