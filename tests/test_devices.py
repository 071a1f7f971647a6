"""model.py on several devices: tf.distribute mirrored on 2 logical CPUs, and the JAX backend with
DataParallel on 2 host devices and two processes of --distribute multiworker, all against one
TensorFlow device. The runs are processes of their own (the device count and the backend are
fixed when a process starts), except the one-device run, which trains in this process.

A file of its own so that `make test` (pytest-xdist, --dist loadfile) runs these minutes of
processes beside test_model.py's in-process runs."""
import importlib.util
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, read_log

import model as M
import figure_pose.training.network as N

# 2 epochs x 3 steps, no augmentation: one device and several see the same batches
DEVICE_RUN = ["--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "4", "--size", "64", "--width", "0.25",
              "--seed", "3", "--no-augment", "--quiet"]
NO_JAX = importlib.util.find_spec("jax") is None


def losses(out):
    """The loss column of a run's log.csv."""
    return [float(r["loss"]) for r in read_log(out)]


@pytest.fixture(scope="module")
def tf_runs(tiny_data, tmp_path_factory):
    """The DEVICE_RUN on TensorFlow: --distribute mirrored on 2 logical CPUs (a process:
    --cpu-devices must come before TensorFlow starts) and, meanwhile, one device in this process,
    eagerly (the two use both cores). The one-device run is the reference of every test here:
    the model code draws its initial weights with NumPy (network.HostGlorotUniform), so the JAX
    runs start from the same weights and see the same batches. Returns the runs' folder."""
    runs = tmp_path_factory.mktemp("tf")
    two = subprocess.Popen([sys.executable, str(REPO / "model.py"), "--data", tiny_data, *DEVICE_RUN,
                            "--cpu-devices", "2", "--out", str(runs / "two"), "--distribute", "mirrored"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    M.main(["--data", tiny_data, *DEVICE_RUN, "--run-eagerly", "--out", str(runs / "one")])
    (runs / "two.txt").write_text(finished(two))
    return runs


def test_mirrored_two_devices_matches_one(tf_runs):
    """tf.distribute mirrored on 2 logical CPUs trains as one device does, and the loss falls."""
    assert "--distribute mirrored: 2 devices on tensorflow, a batch of 4 = 2 figures per device" in \
        (tf_runs / "two.txt").read_text()
    one = losses(tf_runs / "one")
    np.testing.assert_allclose(losses(tf_runs / "two"), one, rtol=0.05)
    assert one[1] < one[0]


def run_jax(tiny_data, out, *flags, xla_flags="", **env):
    """model.py --data tiny_data DEVICE_RUN --out out flags on the JAX backend, a process of its own
    (the backend is chosen at start). XLA compiles without LLVM's optimisations (a run of 6 steps
    is mostly its compile: 60 -> 42 s) and computes on one thread, as the TensorFlow runs of a
    pytest-xdist worker do (conftest.py). Only XLA's own --flags: XLA ignored every flag after a stray
    `intra_op_parallelism_threads=1` that stood here, so the DataParallel run had one device, not 2
    (and compiled its train step three times: 46 s against 29 now). Each run's device line is checked."""
    env = dict(os.environ, KERAS_BACKEND="jax", **env,
               XLA_FLAGS=f"--xla_backend_optimization_level=0 --xla_cpu_multi_thread_eigen=false {xla_flags}")
    return subprocess.Popen([sys.executable, str(REPO / "model.py"), "--data", tiny_data, *DEVICE_RUN,
                             "--out", str(out), *flags], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def finished(process):
    """The output of a model.py process, once it has ended well."""
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-2000:]
    return output


@pytest.fixture(scope="module")
def jax_runs(tiny_data, tmp_path_factory):
    """The DEVICE_RUN on the JAX backend two ways: DataParallel on 2 host devices (one process), then
    two processes of --distribute multiworker (gloo on CPU) started together. A run compiles ~160
    XLA programs (the train, test and predict steps, and small eager ops: optimizer slots,
    metrics). There is no JAX one-device run: the reference is tf_runs' TensorFlow one (losses
    within 0.5 % of a JAX one-device run's: 510.0 / 485.2 against 508.5 / 487.8). Each run alone,
    nothing else running: DataParallel 29 s and 33 CPU-seconds, multiworker 42 s and 77 (both
    processes). A persistent compilation cache filled by the earlier runs saved nothing (the
    sharded programs differ), so there is none. Returns the runs' folder."""
    runs = tmp_path_factory.mktemp("jax")
    (runs / "parallel.txt").write_text(finished(run_jax(tiny_data, runs / "parallel", "--distribute", "mirrored",
                                                        xla_flags="--xla_force_host_platform_device_count=2")))
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    processes = [run_jax(tiny_data, runs / "two", "--distribute", "multiworker",
                         KERAS_DISTRIBUTION_JOB_ADDRESSES=f"localhost:{port}", KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                         KERAS_DISTRIBUTION_PROCESS_ID=str(i)) for i in range(2)]
    for i, process in enumerate(processes):
        (runs / f"two_{i}.txt").write_text(finished(process))
    return runs


@pytest.mark.skipif(NO_JAX, reason="JAX is not installed (optional: pip install jax to test the JAX backend)")
def test_jax_data_parallel_matches_one_device(jax_runs, tf_runs):
    """The same model code on the JAX backend, keras.distribution.DataParallel on 2 host devices,
    trains as one TensorFlow device does."""
    assert "--distribute mirrored: 2 devices on jax, a batch of 4 = 2 figures per device" in \
        (jax_runs / "parallel.txt").read_text()
    parallel = losses(jax_runs / "parallel")
    np.testing.assert_allclose(parallel, losses(tf_runs / "one"), rtol=0.05)
    assert parallel[1] < parallel[0]


@pytest.mark.skipif(NO_JAX, reason="JAX is not installed (optional: pip install jax to test the JAX backend)")
def test_jax_two_processes_match_one_process(jax_runs, tf_runs):
    """--distribute multiworker: two processes, each feeding half of every batch, train as one
    TensorFlow device and, within 1 %, as DataParallel in one process (the same JAX programs on
    the same batches; equal to the last bit here). The chief writes the run, worker 1 its own folder."""
    for i in range(2):
        assert "--distribute multiworker: 2 devices on jax" in (jax_runs / f"two_{i}.txt").read_text()
    for folder in (jax_runs / "two", jax_runs / "two" / "worker1"):
        np.testing.assert_allclose(losses(folder), losses(tf_runs / "one"), rtol=0.05)
        np.testing.assert_allclose(losses(folder), losses(jax_runs / "parallel"), rtol=0.01)
    N.load_trained_model(str(jax_runs / "two" / "best.keras"))
    assert (jax_runs / "two" / "eval" / "0001_heatmap.png").exists()
