"""Run an exported figure-pose model: a SavedModel folder or a .tflite file, with its export.json.

    from figure_pose.evaluation.inference import load_exported
    model = load_exported("export/model.tflite")        # or "export/saved_model" or "export/"
    maps = model.maps(canvases_uint8)                  # (N, M, M, J) in [0, 1]

`evaluate.py --export` writes the model and, beside it, export.json (input size S, map size M,
joint names, the codec's stride and sigma). The contract both formats follow:
input float32 (B, S, S, 3) = RGB uint8 canvas / 127.5 - 1; output float32 (B, M, M, J) in
tanh range, maps = clip((out + 1) / 2, 0, 1). A .tflite file takes one figure per call.

An ExportedModel offers what evaluate.py reads of a Keras model (`inputs[0].shape`,
`outputs[0].shape`), so evaluation, --images and decoding run on it unchanged.

Every predictor evaluate.py runs lives here too: `load_model_checked` (a .keras file through
network.py, or an export), `export_model` (writes an export), `oracle_maps` (the stored
ground-truth maps, a perfect model), `model_maps` (with the flip test) and `decode`.
No side effects on import: TensorFlow and Keras are imported only when a model is loaded.
"""
import contextlib
import io
import json
import os
import sys
import warnings

import cv2
import numpy as np

from figure_pose.core.atomic import remove_path, write_json
from figure_pose.core.cli import InputError, os_errors_as_input
from figure_pose.core.confidence_maps import (ConfidenceMapCodec, codec_of_model, dequantise_maps, flip_maps,
                                              quantise_maps, render_confidence_maps)
from figure_pose.core.figures import JOINT_SETS, joint_names, mirror_keypoints

EXPORT_JSON = "export.json"
REFINES = ("dark", "quarter", "none")  # sub-pixel refinements of a map peak (decode)


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
    """An exported model with its export.json; `maps` is network.predict_maps' contract."""

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
        return ConfidenceMapCodec.from_tanh(raw)


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


def exported_predictor(path):
    """A predict(model, canvases, batch_size) for an exported model (the model argument is ignored).

    Same contract as network.predict_maps: uint8 canvases -> maps (N, M, M, J) in [0, 1]
    (ExportedModel, which reads export.json beside the model).
    """
    exported = load_exported(path)
    return lambda _model, canvases, batch_size=16: exported.maps(canvases, batch_size)


# ----------------------------------------------------------------------------- loading and exporting

def import_network():
    """network.py, the backend started first without its start-up chatter (backend.start_keras):
    only when a .keras model is needed, so other mistakes fail fast without TensorFlow."""
    from figure_pose.core import backend
    backend.start_keras()
    from figure_pose.training import network
    return network


def load_model_checked(path):
    """(model, predict): a .keras file with network.predict_maps, or an export (.tflite, SavedModel
    folder, or the folder evaluate.py --export wrote) with predict_exported; one-line
    InputError for anything not ours."""
    if not os.path.exists(path):
        raise InputError(f"model file not found: {path}")
    if is_exported(path):
        try:
            model, predict = load_exported(path), predict_exported
        except ExportError as err:
            raise InputError(f"--model {err}") from None
    else:
        network = import_network()
        try:
            model, predict = network.load_trained_model(path), network.predict_maps
        except (ValueError, OSError) as err:
            raise InputError(str(err)) from None
    n_joints = int(model.outputs[0].shape[-1])
    if n_joints not in JOINT_SETS:
        raise InputError(f"--model {path} predicts {n_joints} joints; figure-pose models predict "
                         f"{' or '.join(map(str, sorted(JOINT_SETS)))}")
    return model, predict


def export_model(model, kind, out_dir):
    """Write a deployable copy of the model's main output: model.tflite or saved_model/.

    Input: float32 (1, S, S, 3) = network.preprocess_images(RGB uint8 canvas) in [-1, 1];
    output: float32 (1, M, M, J) in tanh range [-1, 1] (maps = (out + 1) / 2). export.json
    beside it records S, M, the joint names and the decoding settings (the model's codec).

    Atomic: the export is written to `<path>.partial` and renamed at the end (export.json
    after it), so a killed export leaves nothing at `path` that loads as an export; the
    `.partial` of a killed run is removed by the next one. One-line InputError on OSError.
    """
    import keras
    with os_errors_as_input(f"create --out {out_dir}"):
        os.makedirs(out_dir, exist_ok=True)
    main = keras.Model(model.inputs[0], model.outputs[0], name="figure_pose_export")
    size = int(model.inputs[0].shape[1])
    path = os.path.join(out_dir, "saved_model" if kind == "saved_model" else "model.tflite")
    partial = path + ".partial"
    with os_errors_as_input(f"write the export {path}"):
        remove_path(partial)
        write_export_file(main, kind, size, partial)
        remove_path(os.path.join(out_dir, EXPORT_JSON))      # never beside another export than its own
        if os.path.isdir(path):                                # a folder cannot be renamed over a full one
            remove_path(path)
        os.replace(partial, path)
    with os_errors_as_input(f"write {os.path.join(out_dir, EXPORT_JSON)}"):
        write_json(os.path.join(out_dir, EXPORT_JSON), export_info(model, kind, os.path.basename(path)))
    return path


def export_info(model, kind, name):
    """export.json of `model` exported as `kind` to file or folder `name`: the input and map sizes,
    the joint names and the model's codec (stride, sigma), with how to feed and decode it."""
    size, m = int(model.inputs[0].shape[1]), int(model.outputs[0].shape[1])
    return {"format": kind, "path": name, "input_size": size, "map_size": m,
            "joint_names": list(joint_names(int(model.outputs[0].shape[-1]))), **codec_of_model(size, m).to_json(),
            "input": "float32 (1, S, S, 3) RGB canvas / 127.5 - 1 (network.preprocess_images)",
            "output": "float32 (1, M, M, J) tanh; maps = clip((out + 1) / 2, 0, 1); "
                      "decode with confidence_maps.ConfidenceMapCodec(stride, sigma_px).decode(maps)"}


def write_export_file(main, kind, size, path):
    """The Keras model `main` as a SavedModel folder (batch of any size) or a .tflite file (batch 1) at `path`."""
    import tempfile

    import tensorflow as tf
    batch = None if kind == "saved_model" else 1
    signature = [tf.TensorSpec((batch, size, size, 3), tf.float32, name="figure")]
    if kind == "saved_model":
        with contextlib.redirect_stdout(io.StringIO()):
            main.export(path, format="tf_saved_model", verbose=False, input_signature=signature)
        return
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        main.export(tmp, format="tf_saved_model", verbose=False, input_signature=signature)
        flat = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    with open(path, "wb") as f:
        f.write(flat)


# ----------------------------------------------------------------------------- predictors

def oracle_maps(records, flip_test, flip_perm):
    """The stored ground-truth maps (N, M, M, J) of records, in [0, 1].

    With flip_test, averaged with the maps of the mirrored figure, rendered and stored
    the same way (quantised), then un-flipped with flip_maps: a perfect model's flip test.
    """
    maps = dequantise_maps(records["confidence_maps"])
    if not flip_test:
        return maps
    mirrored = []
    for record in records:
        size = int(record["canvas_size"])
        m = record["confidence_maps"].shape[0]
        kp = mirror_keypoints(record["keypoints"], size, flip_perm)
        mirrored.append(dequantise_maps(quantise_maps(render_confidence_maps(kp, m, size // m))))
    return 0.5 * (maps + flip_maps(np.stack(mirrored), flip_perm))


def model_maps(model, predict, canvases, flip_test, flip_perm, batch_size):
    """Model maps (N, M, M, J) for uint8 canvases; with flip_test the average with the mirror's un-flipped maps."""
    maps = predict(model, canvases, batch_size=batch_size)
    if flip_test:
        mirrored = predict(model, np.ascontiguousarray(canvases[:, :, ::-1]), batch_size=batch_size)
        maps = 0.5 * (maps + flip_maps(mirrored, flip_perm))
    maps = np.asarray(maps, dtype=np.float32)
    broken = int((~np.isfinite(maps)).any(axis=(1, 2, 3)).sum())
    if broken:  # decoding would place those joints anywhere, and score them as misses
        raise InputError(f"--model predicts NaN or infinite maps for {broken} of {len(maps)} figures: it overflows "
                         "(float16 compute, or weights too large), so its joints cannot be decoded")
    return maps


def decode(maps, canvas_size, model_size, refine):
    """Canvas keypoints (N, J, 3) from maps predicted for canvases of side canvas_size by a
    model of input side model_size: its codec, seen on the canvas (stride canvas_size / M)."""
    codec = codec_of_model(model_size, maps.shape[-2]).rescaled(canvas_size / model_size)
    return codec.decode(maps, refine)


def variant_name(refine, flip):
    """A decoding's name in outputs: dark, quarter+flip, ..."""
    return f"{refine}{'+flip' if flip else ''}"
