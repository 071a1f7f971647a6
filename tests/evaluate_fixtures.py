"""What the evaluate.py tests share: evaluate.main in this process, the one-line error check and
the module fixtures (a small synthetic sample, a tiny untrained model). A test module binds the
fixtures by name (`synthetic = evaluate_fixtures.synthetic`); each module builds its own.
"""
import pytest

from bad_input_table import run_main


def evaluate_main(argv, capsys):
    """(exit status, stdout, stderr) of evaluate.main(argv) in this process."""
    return run_main("evaluate", [str(a) for a in argv], capsys)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """(coco root, coco.npy) of a small synthetic COCO sample (16 images, seed 3), made in this process."""
    import coco_process
    from synthetic_coco import make_synthetic_coco
    root = tmp_path_factory.mktemp("syn")
    make_synthetic_coco(str(root), n_images=16, split="train2017", seed=3)
    npy = root / "coco.npy"
    coco_process.main(["--coco-root", str(root), "--out", str(npy), "--examples", "0", "--quiet", "--workers", "1"])
    return root, npy


def one_line_error(status, stderr):
    assert status != 0
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error:"), stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained small model (seeded) saved as model.py saves one (plumbing only)."""
    from figure_pose.evaluation.inference import import_network
    network = import_network()
    import keras
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    network.build_model(size=96, width=0.25).save(path)
    return path
