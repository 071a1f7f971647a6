"""Training on the device: the loss, the training model and the learning-rate schedule.

    trainer = compile_model(make_trainer(network, val_batches, ARCH_CODECS["simple"]), lr=5e-4, total_steps=2000)

`FigureTrainer` wraps the network: it augments (DeviceAugment), renders the target maps with
the codec, computes the loss (10 x main + 5 x each side output of `JointMSE`) and PCK, all in
`keras.ops`, so TensorFlow and JAX run the same code. The schedule is SimpleBaseline's Adam
with a linear warm-up and a cosine decay (docs/training.md, "Training defaults"). `make_datasets` makes
the training and validation FigureBatches of a TrainConfig (train_config.py).
"""
import math

import keras
import numpy as np
from keras import ops

from figure_pose.core.cli import InputError
from figure_pose.core.confidence_maps import ConfidenceMapCodec
from figure_pose.core.metrics import figure_norm_size, mean_pose, pck
from figure_pose.data.figure_dataset import DeviceAugment, FigureBatches, FigureFile, split_by_image
from figure_pose.training.network import PACKAGE, load_trained_model

LOSS_WEIGHTS = {"main": 10.0, "side": 5.0}  # the original's 10 * main + 5 * side1 + 5 * side2
FOREGROUND_WEIGHT = 9.0  # --loss fg_mse: a foreground pixel (target 1) weighs 1 + 9 = 10 background pixels

# The default recipe (docs/training.md, "Training defaults"): SimpleBaseline's (Xiao et al. 2018) Adam,
# augmentation and sigma (2 map pixels), with a linear warm-up (mmpose's 500 iterations) and a
# cosine decay over the run (RTMPose's shape). The peak lr is 5e-4 at a global batch of 8 (the
# measured small-data lr) scaled by the square-root rule for Adam (Malladi et al. 2022; linear
# scaling overshoots Adam at small batches): 2e-3 at SimpleBaseline's batch of 128.
REFERENCE_LR, REFERENCE_BATCH = 5e-4, 8
WARMUP_STEPS = 500         # linear warm-up steps from ~0 to the peak, at most a tenth of the run
FINAL_LR_FRACTION = 0.05   # the cosine ends at this fraction of the peak
MIN_STEPS = 2000           # optimiser steps a run takes at least (epochs are lengthened on small sets)

# ----------------------------------------------------------------------------- loss


@keras.saving.register_keras_serializable(package=PACKAGE)
class JointMSE(keras.losses.Loss):
    """The original's loss: sum over joints of the per-joint MSE, labelled joints only.

    y_true = (target (B, M, M, J) maps in tanh range [-1, 1], weights (B, J): 1 = labelled);
    y_pred (B, M, M, J). Per figure: sum_j weight_j * mean_{y,x} w * (pred - target)^2 with
    w = 1 + foreground_weight * (target + 1) / 2 (w = 1: the original). Mean over the batch.
    """

    def __init__(self, foreground_weight: float = 0.0, name="joint_mse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.foreground_weight = foreground_weight

    def call(self, y_true, y_pred):
        target, weights = y_true
        pixel_weight = 1.0 + self.foreground_weight * (target + 1.0) * 0.5
        per_joint = ops.mean(pixel_weight * ops.square(y_pred - target), axis=(1, 2))   # (B, J)
        return ops.sum(per_joint * weights, axis=-1)                                    # (B,)

    def get_config(self):
        return {**super().get_config(), "foreground_weight": self.foreground_weight}


def make_loss(name: str):
    """JointMSE for --loss: 'mse' (the original) or 'fg_mse' (foreground pixels x 10)."""
    return {"mse": JointMSE(), "fg_mse": JointMSE(foreground_weight=FOREGROUND_WEIGHT)}[name]


@keras.saving.register_keras_serializable(package=PACKAGE)
class FigureTrainer(keras.Model):
    """The network inside its training step: augmentation, targets and loss on the device.

    Input: a FigureBatches batch (uint8 crops, stored keypoints, augmentation numbers).
    `call` runs DeviceAugment, renders the target maps from the moved keypoints with the
    codec (one target for every output) and runs the network; `compute_loss` is the
    original's 10 x main + 5 x each side output of JointMSE; `compute_metrics` adds PCK of
    the main output (argmax + quarter-offset decoding on the device). `network` is the
    inference model that is saved: the augmentation is never part of it.
    """

    def __init__(self, network, augment: DeviceAugment, codec: ConfidenceMapCodec, loss: str = "fg_mse",
                 **kwargs):
        super().__init__(**kwargs)
        self.network, self.augment, self.codec = network, augment, codec
        self.joint_mse = make_loss(loss)
        self.output_weights = [LOSS_WEIGHTS["main"]] + [LOSS_WEIGHTS["side"]] * (len(network.outputs) - 1)
        self.pck_10 = keras.metrics.Mean(name="pck@0.1")
        self.pck_20 = keras.metrics.Mean(name="pck@0.2")

    def call(self, batch, training=False):
        images, keypoints = self.augment(batch)                                  # (B, S, S, 3), (B, J, 3)
        weights = ops.cast(keypoints[..., 2] > 0, "float32")                     # (B, J)
        maps = self.codec.encode_on_device(keypoints[..., :2], weights, self.augment.size, ops)
        outputs = self.network(images, training=training)                        # 3 x (B, M, M, J)
        return {"outputs": outputs, "target": self.codec.to_tanh(maps), "weights": weights,
                "keypoints": keypoints}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        target = (y_pred["target"], y_pred["weights"])
        return ops.sum(ops.stack([w * self.joint_mse(target, out)
                                  for w, out in zip(self.output_weights, y_pred["outputs"])]))

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        xy = self.codec.decode_on_device(y_pred["outputs"][0], ops)            # (B, J, 2)
        error = ops.sqrt(ops.sum(ops.square(xy - y_pred["keypoints"][..., :2]), axis=-1))
        norm = figure_norm_size(self.augment.size)
        for threshold, metric in ((0.1, self.pck_10), (0.2, self.pck_20)):
            metric.update_state(ops.cast(error <= threshold * norm, "float32"), sample_weight=y_pred["weights"])
        return self.get_metrics_result()


def make_trainer(network, batches, codec, loss="fg_mse"):
    """FigureTrainer of `network` for FigureBatches `batches`, built on the shapes of one of its
    figures (Keras must see the trainer built before fit, e.g. to restore a --resume backup into
    it). Built symbolically: an eager call runs op by op, each op compiled on its own on JAX
    (12 s on a CPU)."""
    trainer = FigureTrainer(network, DeviceAugment(batches.size, batches.canvas_size, batches.flip_perm),
                            codec, loss)
    trainer({name: keras.KerasTensor((1, *value.shape[1:]), dtype=str(value.dtype))
             for name, value in batches[0].items()})
    return trainer


def init_from(network, path):
    """Copy the weights of a model.py .keras file of the same architecture into `network` (fine-tuning);
    InputError (one line) for another architecture."""
    source = load_trained_model(path)
    shapes = [w.shape for w in source.get_weights()]
    if shapes != [w.shape for w in network.get_weights()]:
        raise InputError(f"--init-weights {path} has another architecture than --arch/--width/--depth/--size")
    network.set_weights(source.get_weights())

# ----------------------------------------------------------------------------- schedule


def scaled_lr(batch_size: int) -> float:
    """Default peak learning rate for a global batch: REFERENCE_LR x sqrt(batch / REFERENCE_BATCH)
    (5e-4 at 8, 1e-3 at 32, 2e-3 at 128)."""
    return REFERENCE_LR * math.sqrt(batch_size / REFERENCE_BATCH)


def epoch_steps(figures: int, batch_size: int, epochs: int, min_steps: int = MIN_STEPS, steps: int = 0) -> int:
    """Optimiser steps per epoch: `steps` if > 0, else one pass over `figures` (full batches),
    lengthened so that all `epochs` take at least `min_steps` (a small set still converges)."""
    if steps:
        return steps
    return max(1, figures // batch_size, math.ceil(min_steps / epochs))


def warmup_steps(total_steps: int) -> int:
    """Linear warm-up length: WARMUP_STEPS, at most a tenth of the run."""
    return min(WARMUP_STEPS, total_steps // 10)


def learning_rate(peak: float, total_steps: int, kind: str = "cosine"):
    """The learning rate as a function of the optimiser step (so --resume continues it).

    cosine: linear warm-up from peak / 1000 to `peak` over warmup_steps(total_steps), then
    cosine decay to FINAL_LR_FRACTION x peak at total_steps; constant: `peak` throughout.
    """
    if kind == "constant":
        return peak
    warmup = warmup_steps(total_steps)
    return keras.optimizers.schedules.CosineDecay(peak / 1000, max(1, total_steps - warmup), alpha=FINAL_LR_FRACTION,
                                                  warmup_target=peak, warmup_steps=warmup)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScaledAdam(keras.optimizers.Adam):
    """Adam whose steps for some variables are scaled by `lr_scale` (discriminative fine-tuning:
    a pretrained encoder learns at a fraction of the decoder's rate, as ULMFiT does), and held
    at zero for their first `frozen_steps` optimiser steps (a warm-up of the new decoder on a
    frozen encoder, as keras-io's keypoint example trains it; Adam's moments still gather).

    scaled_paths: the `Variable.path`s to scale. Works on every backend: the scale is applied
    where Adam's own update_step runs, keyed by Adam's own variable index.
    """

    def __init__(self, scaled_paths=(), lr_scale: float = 1.0, frozen_steps: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.scaled_paths, self.lr_scale, self.frozen_steps = list(scaled_paths), float(lr_scale), int(frozen_steps)

    def build(self, variables):
        super().build(variables)
        paths = set(self.scaled_paths)
        self._scaled_indices = {i for i, v in enumerate(variables) if v.path in paths}

    def update_step(self, gradient, variable, learning_rate):
        if self._get_variable_index(variable) in self._scaled_indices:
            scale = self.lr_scale
            if self.frozen_steps:  # `iterations` counts the steps before this one
                scale = ops.where(ops.less(self.iterations, self.frozen_steps), 0.0, scale)
            learning_rate = ops.multiply(learning_rate, ops.cast(scale, learning_rate.dtype))
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "scaled_paths": self.scaled_paths, "lr_scale": self.lr_scale,
                "frozen_steps": self.frozen_steps}


def encoder_variables(network):
    """The trainable variables of a pretrained encoder (the nested model named "encoder"); [] without one."""
    return [v for layer in network.layers if layer.name == "encoder" for v in layer.trainable_variables]


def compile_model(trainer, lr: float, total_steps: int = 0, kind: str = "cosine", run_eagerly: bool = False,
                  encoder_lr_scale: float = 1.0, encoder_frozen_steps: int = 0):
    """Adam with learning_rate(lr, total_steps, kind) (constant lr if total_steps is 0), the
    pretrained encoder's steps (if any) scaled by encoder_lr_scale, and zero for its first
    encoder_frozen_steps; the loss is the trainer's own;
    run_eagerly: no traced graph (debugging, short runs). The optimizer's slots are made here:
    made inside the first traced train step instead, they make TensorFlow trace that step twice
    (half of a short run)."""
    schedule = learning_rate(lr, total_steps, kind if total_steps else "constant")
    scaled = encoder_lr_scale != 1.0 or encoder_frozen_steps > 0
    encoder = [v.path for v in encoder_variables(trainer.network)] if scaled else []
    optimizer = ScaledAdam(encoder, encoder_lr_scale, encoder_frozen_steps, learning_rate=schedule) if encoder else \
        keras.optimizers.Adam(schedule)
    trainer.compile(optimizer=optimizer, run_eagerly=run_eagerly)
    trainer.network.run_eagerly = run_eagerly  # its predict_on_batch (the epoch pictures) too: no trace a run
    trainer.optimizer.build(trainer.trainable_variables)
    return trainer

# ----------------------------------------------------------------------------- data


def make_datasets(cfg, shard=(0, 1)):
    """(train, val) FigureBatches of a TrainConfig: --val-data, or an 80/20 split of --data by image id.

    Only the small per-figure fields are read for the split (FigureFile.small_fields).
    shard (process, processes): the training set serves this process's part of every batch.
    InputError if the two files do not go together or --data cannot be split.
    """
    train_idx, val_path, val_idx = None, cfg.val_data or cfg.data, None
    if not cfg.val_data:
        image_ids = FigureFile(cfg.data).small_fields()["image_id"]
        train_idx, val_idx = split_by_image(image_ids, 0.2, cfg.seed)
        if len(val_idx) == 0:
            raise InputError(f"--data {cfg.data}: its figures come from one image, so no validation images "
                             "can be split off; give --val-data")
    figures = FigureFile(cfg.data).count if train_idx is None else len(train_idx)
    steps = epoch_steps(figures, cfg.batch_size, cfg.epochs, cfg.min_steps, cfg.steps_per_epoch)
    loader = dict(workers=cfg.workers, use_multiprocessing=cfg.workers > 1 and cfg.processes,
                  max_queue_size=max(10, 2 * cfg.workers))
    try:
        train = FigureBatches(cfg.data, train_idx, cfg.batch_size, cfg.size or None, augment=cfg.augment,
                              seed=cfg.seed, steps=steps, shard=shard, **loader)
        val = FigureBatches(val_path, val_idx, cfg.batch_size, train.size, shuffle=False, **loader)
    except ValueError as err:  # e.g. a batch size the processes cannot share
        raise InputError(str(err)) from None
    check_datasets(cfg, train, val)
    return train, val


def check_datasets(cfg, train, val):
    """InputError unless the validation figures fit the training ones (joints, canvas) and the
    input size suits the network (a multiple of 32)."""
    val_path = cfg.val_data or cfg.data
    if val.n_joints != train.n_joints:
        raise InputError(f"--val-data {val_path} has {val.n_joints} joints, --data {cfg.data} {train.n_joints}")
    if train.size % 32:
        raise InputError(f"--data {cfg.data} has {train.size}x{train.size} canvases; the network needs a "
                         "multiple of 32: give --size")
    if val.canvas_size != train.canvas_size:  # the device augmentation is built for one canvas size
        raise InputError(f"--val-data {val_path} has {val.canvas_size}x{val.canvas_size} canvases, "
                         f"--data {cfg.data} {train.canvas_size}x{train.canvas_size}")


def baseline_pck(train, val, threshold=0.2):
    """PCK of predicting the training figures' mean pose for every validation figure."""
    pose = mean_pose(train.input_keypoints())
    gt = val.input_keypoints()
    return pck(np.broadcast_to(pose, gt[..., :2].shape), gt, figure_norm_size(val.size), threshold)
