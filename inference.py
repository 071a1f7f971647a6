"""Run an exported figure-pose model: a SavedModel folder or a .tflite file, with its export.json.

    from inference import load_exported
    model = load_exported("export/model.tflite")        # or "export/saved_model" or "export/"
    maps = model.maps(canvases_uint8)                  # (N, M, M, J) in [0, 1]

`evaluate.py --export` writes the model and, beside it, export.json (input size S, map size M,
joint names, the codec's stride and sigma). The contract both formats follow:
input float32 (B, S, S, 3) = RGB uint8 canvas / 127.5 - 1; output float32 (B, M, M, J) in
tanh range, maps = clip((out + 1) / 2, 0, 1). A .tflite file takes one figure per call.

An ExportedModel offers what evaluate.py reads of a Keras model (`inputs[0].shape`,
`outputs[0].shape`), so evaluation, --images and decoding run on it unchanged.
No side effects on import: TensorFlow is imported only when a model is loaded.
"""
import json
import os
import sys
import warnings

import cv2
import numpy as np

EXPORT_JSON = "export.json"


class ExportError(ValueError):
    """An exported model that cannot be read or run; the message is one line naming the path."""


class _Shape:
    """Stands in for a Keras tensor where only `.shape` is read."""

    def __init__(self, shape):
        self.shape = tuple(shape)


def find_export(path):
    """(model path, export.json path, format) for a .tflite file, a SavedModel folder, or the
    folder evaluate.py --export wrote (holding export.json and the model it names)."""
    path = os.path.normpath(path)
    if os.path.isfile(path) and path.endswith(".tflite"):
        return path, os.path.join(os.path.dirname(path), EXPORT_JSON), "tflite"
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, EXPORT_JSON)):
        info = read_export_json(os.path.join(path, EXPORT_JSON))
        return find_export(os.path.join(path, str(info.get("path", ""))))
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path, os.path.join(os.path.dirname(path), EXPORT_JSON), "saved_model"
    raise ExportError(f"{path} is not an exported figure-pose model (a .tflite file, a SavedModel folder "
                      f"or a folder with {EXPORT_JSON})")


def read_export_json(path):
    """The export.json dict, checked for the fields a predictor needs."""
    try:
        with open(path) as f:
            info = json.load(f)
    except FileNotFoundError:
        raise ExportError(f"{path} not found: an exported model needs the export.json written beside it "
                          "by evaluate.py --export") from None
    except (OSError, ValueError) as err:
        raise ExportError(f"cannot read {path} ({err})") from None
    needed = ("input_size", "map_size", "joint_names", "stride", "sigma_px")
    if not isinstance(info, dict) or any(k not in info for k in needed):
        raise ExportError(f"{path} is not an export.json of evaluate.py --export (needs {', '.join(needed)})")
    return info


def import_tensorflow(path, what):
    """TensorFlow, imported with its C++ start-up lines (written to fd 2 before TF_CPP_MIN_LOG_LEVEL is
    read) silenced, as model.py does; ExportError naming `path` if it is not installed (e.g. a JAX-only setup)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf
        tf.config.list_physical_devices()
        return tf
    except ImportError:
        raise ExportError(f"{path}: running {what} needs TensorFlow (pip install tensorflow)") from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tflite_interpreter(path):
    """A TFLite interpreter: ai_edge_litert if installed, else TensorFlow's tf.lite (deprecated, still there)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = import_tensorflow(path, "a .tflite model (or ai_edge_litert)").lite.Interpreter
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite's "Interpreter is deprecated": still the one we have
            interpreter = Interpreter(model_path=path, num_threads=os.cpu_count())
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise ExportError(f"{path} is not a readable TFLite model ({str(err).splitlines()[0]})") from None
    return interpreter


def tflite_runner(path):
    """run(x float32 (B, S, S, 3)) -> raw outputs (B, M, M, J), one figure per invoke."""
    interpreter = tflite_interpreter(path)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]

    def run(x):
        outputs = []
        for xi in x:
            interpreter.set_tensor(inp["index"], xi[None])
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(out["index"])[0])
        return np.stack(outputs)
    return run


def saved_model_runner(path):
    """run(x float32 (B, S, S, 3)) -> raw outputs (B, M, M, J) through the SavedModel's `serve`."""
    tf = import_tensorflow(path, "a SavedModel")
    try:
        loaded = tf.saved_model.load(path)
        serve = loaded.serve
    except (OSError, ValueError, AttributeError) as err:
        raise ExportError(f"{path} is not a readable figure-pose SavedModel ({str(err).splitlines()[0]})") from None

    def run(x):
        assert loaded is not None  # keep the loaded object (it owns the variables) alive with `run`
        return np.asarray(serve(tf.constant(x)))
    return run


class ExportedModel:
    """An exported model with its export.json; `maps` is model.predict_maps' contract."""

    def __init__(self, path):
        self.path, json_path, self.format = find_export(path)
        self.info = read_export_json(json_path)
        self.input_size = int(self.info["input_size"])
        self.map_size = int(self.info["map_size"])
        self.joint_names = list(self.info["joint_names"])
        self.inputs = [_Shape((None, self.input_size, self.input_size, 3))]
        self.outputs = [_Shape((None, self.map_size, self.map_size, len(self.joint_names)))]
        self._run = tflite_runner(self.path) if self.format == "tflite" else saved_model_runner(self.path)

    def maps(self, canvases_uint8, batch_size=16):
        """Maps float32 (N, M, M, J) in [0, 1] of uint8 canvases (N, S', S', 3), resized (area) to S if needed."""
        canvases = np.asarray(canvases_uint8)
        size = self.input_size
        if canvases.shape[1] != size:
            canvases = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in canvases])
        x = canvases.astype(np.float32) / 127.5 - 1.0
        raw = np.concatenate([self._run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        return np.clip((raw + 1.0) * 0.5, 0.0, 1.0).astype(np.float32)


def load_exported(path):
    """ExportedModel of `path`; ExportError (one line) for anything that is not an export of ours."""
    return ExportedModel(path)


def predict_exported(model, canvases_uint8, batch_size=16):
    """The predict(model, canvases, batch_size) evaluate.py calls, for an ExportedModel."""
    return model.maps(canvases_uint8, batch_size)


def is_exported(path):
    """True if `path` names an export (.tflite, SavedModel folder or export folder) rather than a .keras file."""
    path = os.path.normpath(path)
    return path.endswith(".tflite") or os.path.isdir(path)
