"""The Keras backend's plumbing: a quiet start, the dtype policy and multi-device training.

Nothing happens on import. A script calls `start_keras()` once, before it imports a module
that imports keras (network.py, training.py), so that TensorFlow's C++ start-up lines never
reach the user's terminal. Everything here works on the TensorFlow (default) and JAX
(KERAS_BACKEND=jax) backends.
"""
import contextlib
import os
import sys

MULTIWORKER_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                   "KERAS_DISTRIBUTION_PROCESS_ID")


@contextlib.contextmanager
def native_stderr_silenced():
    """Silence file descriptor 2 for the duration: TensorFlow's C++ start-up log lines
    (oneDNN, CUDA probing) go there before TF_CPP_MIN_LOG_LEVEL is read."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_keras():
    """Import keras (and its backend) with TensorFlow's start-up chatter silenced; returns the module.

    On TensorFlow the devices are probed now, silenced: without a GPU driver the CUDA probe
    may log "failed call to cuInit" to fd 2. Not on JAX: its multi-process start must come
    first. Calling it again is free.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_silenced():
        import keras
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf
            tf.config.list_physical_devices()
    return keras


def dtype_policy(mixed_precision: bool) -> str:
    """Keras dtype policy: float32, or float16 compute on a GPU / bfloat16 on CPUs and TPUs.

    Set on every training run (not only when mixed) so that one run's policy never leaks
    into the next model built in the same process. Variables and the loss stay float32.
    """
    import keras
    if not mixed_precision:
        return "float32"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    if keras.backend.backend() == "jax":
        import jax
        return "mixed_float16" if jax.default_backend() == "gpu" else "mixed_bfloat16"
    return "mixed_bfloat16"


def check_distribute(kind: str):
    """A clear ValueError for a --distribute choice this backend and environment cannot run."""
    import keras
    if kind != "multiworker":
        return
    if keras.backend.backend() != "jax":
        raise ValueError("--distribute multiworker runs on the JAX backend (KERAS_BACKEND=jax): Keras 3's "
                         "fit() fails under tf.distribute.MultiWorkerMirroredStrategy (keras-team/keras#20585)")
    missing = [name for name in MULTIWORKER_ENV if not os.environ.get(name)]
    if missing:
        raise ValueError(f"--distribute multiworker needs {', '.join(missing)} set in every process "
                         "(coordinator host:port, number of processes, this process's id from 0)")


def join_processes(kind: str):
    """(process, processes): multiworker joins the JAX job described by KERAS_DISTRIBUTION_*.

    Must run before anything touches the backend (jax.distributed.initialize's rule).
    """
    import keras
    if kind != "multiworker":
        return 0, 1
    check_distribute(kind)
    keras.distribution.initialize()
    import jax
    return jax.process_index(), jax.process_count()


def make_strategy(kind: str):
    """A context to build and compile under: tf.distribute strategy scope, JAX DataParallel or nothing.

    On JAX, every device of every process holds a replica; with several processes each one
    feeds its own part of the global batch (FigureBatches shard), so Keras must not shard again.
    """
    import keras
    if kind == "none":
        if keras.backend.backend() == "jax":  # no distribution left over from an earlier run
            keras.distribution.set_distribution(None)
        return contextlib.nullcontext()
    if keras.backend.backend() == "jax":
        distribution = keras.distribution.DataParallel()
        distribution.auto_shard_dataset = False
        keras.distribution.set_distribution(distribution)
        return contextlib.nullcontext()
    import tensorflow as tf
    return tf.distribute.MirroredStrategy(tf_devices()).scope()


def tf_devices():
    """TensorFlow's devices that --distribute mirrored trains on: every GPU, or every (logical)
    CPU where there is none."""
    import tensorflow as tf
    return [d.name for d in tf.config.list_logical_devices("GPU")] or \
           [d.name for d in tf.config.list_logical_devices("CPU")]


def replicas(kind: str) -> int:
    """How many devices (model replicas, each taking a slice of the global batch) --distribute
    `kind` trains on, over all processes; 1 for "none"."""
    import keras
    if kind == "none":
        return 1
    if keras.backend.backend() == "jax":
        import jax
        return jax.device_count()
    return len(tf_devices())


def multi_process():
    """True when this is one of several JAX processes training one model."""
    import keras
    if keras.backend.backend() != "jax":
        return False
    import jax
    return jax.process_count() > 1


def local_replica(model, replica=None):
    """`model`'s current weights in a copy on this process's devices only (`replica`: reused).

    In multi-process JAX training the variables span other processes' devices, so no process
    can fetch the model's outputs; validation runs on this local copy instead.
    """
    import keras
    if replica is None:
        import jax
        local = keras.distribution.DataParallel(devices=jax.local_devices())
        local.auto_shard_dataset = False
        with local.scope():
            replica = keras.models.clone_model(model)
    replica.set_weights(model.get_weights())
    return replica


def set_cpu_devices(n: int):
    """Split the CPU into n logical devices (to try --distribute mirrored on one machine)."""
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
