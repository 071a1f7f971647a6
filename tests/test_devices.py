"""model.py on several devices: tf.distribute mirrored on 2 logical CPUs, and the JAX backend on one
device, DataParallel on 2 host devices and two processes of --distribute multiworker. The runs
are processes of their own (the device count and the backend are fixed when a process starts);
the one-device and the DataParallel JAX runs share one.

A file of its own so that `make test` (pytest-xdist, --dist loadfile) runs these minutes of
processes beside test_model.py's in-process runs."""
import importlib.util
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, read_log

import model as M
import network as N

# 2 epochs x 3 steps, no augmentation: one device and several see the same batches
DEVICE_RUN = ["--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "4", "--size", "64", "--width", "0.25",
              "--seed", "3", "--no-augment", "--quiet"]
NO_JAX = importlib.util.find_spec("jax") is None


def losses(out):
    """The loss column of a run's log.csv."""
    return [float(r["loss"]) for r in read_log(out)]


def test_mirrored_two_devices_matches_one(tiny_data, tmp_path):
    """--distribute mirrored on 2 logical CPUs (a process: --cpu-devices must come before TensorFlow
    starts) trains as one device does (in this process, meanwhile, eagerly: the two use both cores)."""
    two = subprocess.Popen([sys.executable, str(REPO / "model.py"), "--data", tiny_data, *DEVICE_RUN,
                            "--cpu-devices", "2", "--out", str(tmp_path / "two"), "--distribute", "mirrored"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    M.main(["--data", tiny_data, *DEVICE_RUN, "--run-eagerly", "--out", str(tmp_path / "one")])
    finished(two)
    np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=0.05)


def run_jax(tiny_data, runs, xla_flags="", **env):
    """model.py's main on the JAX backend in a process of its own (the backend is chosen at start),
    once per (out folder, extra flags) of `runs`, one after the other: a later run reuses the
    imports and the compiled programs of the earlier ones. XLA compiles without LLVM's
    optimisations (a run of 6 steps is mostly its compile: 60 -> 42 s) and computes on one thread,
    as the TensorFlow runs of a pytest-xdist worker do (conftest.py): jax_runs with a process per
    run, alone, 218 -> 195 CPU-seconds."""
    env = dict(os.environ, KERAS_BACKEND="jax", **env,
               XLA_FLAGS=f"--xla_backend_optimization_level=0 --xla_cpu_multi_thread_eigen=false "
                         f"intra_op_parallelism_threads=1 {xla_flags}")
    argvs = [["--data", tiny_data, *DEVICE_RUN, "--out", str(out), *extra] for out, extra in runs]
    return subprocess.Popen([sys.executable, "-c", "import json, sys, model\nfor argv in json.loads(sys.argv[1]): "
                             "model.main(argv)", json.dumps(argvs)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def finished(process):
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-2000:]


@pytest.fixture(scope="module")
def jax_runs(tiny_data, tmp_path_factory):
    """The DEVICE_RUN on the JAX backend three ways: one device, then DataParallel on 2 host devices
    (the same process: the one-device run uses one of its two devices), then two processes of
    --distribute multiworker (gloo on CPU) started together.
    A run compiles ~160 XLA programs (the train, test and predict steps, and small eager ops:
    optimizer slots, metrics), the same in every run: the first process fills a persistent
    compilation cache that the multiworker processes reuse (50 -> 25 s a run alone, when a run
    compiled ~530 with Keras' own initialisers and eager pictures).
    `pytest tests/test_devices.py -k jax` alone: 132 s and 218 CPU-seconds with a process per run
    and XLA's thread pool, 123 s and 177 CPU-seconds like this; another night, 164 s and 228
    CPU-seconds, then 139 s and 194 with ~160 programs a run (291e4a0). Returns the runs' folder."""
    runs = tmp_path_factory.mktemp("jax")
    cache = {"JAX_COMPILATION_CACHE_DIR": str(runs / "xla_cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
             "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    finished(run_jax(tiny_data, [(runs / "one", []), (runs / "parallel", ["--distribute", "mirrored"])],
                     xla_flags="--xla_force_host_platform_device_count=2", **cache))
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    processes = [run_jax(tiny_data, [(runs / "two", ["--distribute", "multiworker"])],
                         KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{port}", KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                         KERAS_DISTRIBUTION_PROCESS_ID=str(i), **cache) for i in range(2)]
    for process in processes:
        finished(process)
    return runs


@pytest.mark.skipif(NO_JAX, reason="JAX is not installed (optional: pip install jax to test the JAX backend)")
def test_jax_data_parallel_matches_one_device(jax_runs):
    """The same model code on the JAX backend; keras.distribution.DataParallel on 2 host devices."""
    one = losses(jax_runs / "one")
    np.testing.assert_allclose(losses(jax_runs / "parallel"), one, rtol=0.05)
    assert one[1] < one[0]


@pytest.mark.skipif(NO_JAX, reason="JAX is not installed (optional: pip install jax to test the JAX backend)")
def test_jax_two_processes_match_one_process(jax_runs):
    """--distribute multiworker: two processes, each feeding half of every batch; the chief writes
    the run, worker 1 its own folder."""
    for folder in (jax_runs / "two", jax_runs / "two" / "worker1"):
        np.testing.assert_allclose(losses(folder), losses(jax_runs / "one"), rtol=0.05)
    N.load_trained_model(str(jax_runs / "two" / "best.keras"))
    assert (jax_runs / "two" / "eval" / "0001_heatmap.png").exists()
