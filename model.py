"""Train the figure pose network: a U-Net of pre-activation residual bottlenecks.

    python model.py --data coco.npy --val-data coco_val.npy --epochs 50 --out runs/NAME

The network maps a figure canvas (S x S x 3 in [-1, 1]) to one confidence map per joint
at S / 4 (stride 4, sigma 2 map pixels, the resolution coco.npy stores maps at), plus two
deep-supervision side outputs. `--arch original` builds a faithful port of the original
network (REFERENCE.md section 2, maps at full resolution) for comparisons.

Training runs at device speed: the host only reads stored bytes (figure_dataset.FigureBatches)
and the training model (FigureTrainer) augments, renders the target maps, computes the loss
and PCK on the device. Everything there uses `keras.ops`, so the same code runs on the
TensorFlow (default) and JAX backends (KERAS_BACKEND=jax).

Writes under --out: best.keras (best val PCK@0.2), last.keras, log.csv, curves.png, tb/
(TensorBoard), eval/EPOCH_*.png (a fixed validation batch; EPOCH counted from 0, as log.csv), config.json (the flags and the
data's joints and input size, which --resume checks), split.json (the training and the
validation image ids, for evaluate.py --run) and backup/ (for --resume). Checkpoints,
config.json and backups go through a temporary file and a rename, so a kill never leaves half
of one; --resume cuts log.csv back to the epochs of the backup it restores.
"""
import argparse
import contextlib
import csv
import importlib.util
import io
import json
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass, replace


import backend

keras = backend.start_keras()  # a script: TensorFlow's start-up lines silenced before any keras import

import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from cli import HelpFormatter, InputError, OneLineParser, check_out_dir, duration, int_in, number
from confidence_maps import ARCH_CODECS, ConfidenceMapCodec
from figure_dataset import NO_AUGMENT, Augment, DeviceAugment, FigureBatches, FigureFile, split_by_image
from figures import heat_image, joint_names, summed_maps
from metrics import figure_norm_size, mean_pose, pck
from network import BACKBONES, PACKAGE, backbone_weights, build_model, count_flops, load_trained_model
from pictures import label_columns, peaks_on_grey, save_plot, save_png

LOSS_WEIGHTS = {"main": 10.0, "side": 5.0}  # the original's 10 * main + 5 * side1 + 5 * side2

# The default recipe (README "Training defaults"): SimpleBaseline's (Xiao et al. 2018) Adam,
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
    w = 1 + foreground_weight * (target + 1) / 2 (w = 1: the original).
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
    return {"mse": JointMSE(), "fg_mse": JointMSE(foreground_weight=9.0)}[name]


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
    """FigureTrainer of `network` for FigureBatches `batches`, built on one of its figures
    (Keras must see the trainer built before fit, e.g. to restore a --resume backup into it)."""
    trainer = FigureTrainer(network, DeviceAugment(batches.size, batches.canvas_size, batches.flip_perm),
                            codec, loss)
    trainer({name: value[:1] for name, value in batches[0].items()})
    return trainer


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


def compile_model(trainer, lr: float, total_steps: int = 0, kind: str = "cosine"):
    """Adam with learning_rate(lr, total_steps, kind) (constant lr if total_steps is 0);
    the loss is the trainer's own."""
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate(lr, total_steps, kind if total_steps else "constant")))
    return trainer

# ----------------------------------------------------------------------------- pictures


def grid(tiles, cols):
    """Tile a list of equal (H, W, 3) uint8 images into rows of `cols`."""
    rows = [tiles[i:i + cols] for i in range(0, len(tiles), cols)]
    rows[-1] = rows[-1] + [np.full_like(tiles[0], 255)] * (cols - len(rows[-1]))
    return np.vstack([np.hstack(r) for r in rows])


def write_eval_pngs(out_dir, epoch, images, gt01, pred01):
    """The original's per-epoch pictures of a fixed batch: images (B, S, S, 3) uint8, maps (B, M, M, J)."""
    os.makedirs(out_dir, exist_ok=True)
    size, cols = images.shape[1], min(4, len(images))
    save = lambda name, rgb: save_png(os.path.join(out_dir, f"{epoch:04d}_{name}.png"), rgb)  # noqa: E731
    save("img_GT", grid(list(images), cols))
    save("heatmap_GT", grid([heat_image(summed_maps(m), size) for m in gt01], cols))
    names = joint_names(pred01.shape[-1])
    per_joint = np.vstack([np.hstack([heat_image(summed_maps(m), size)] +
                                     [heat_image(m[..., j], size) for j in range(m.shape[-1])]) for m in pred01])
    save("heatmap", np.vstack([label_columns(per_joint, ["all joints", *names]), per_joint]))
    save("overlap", grid([peaks_on_grey(img / 255.0, m, names) for img, m in zip(images, pred01)], cols))


def plot_curves(csv_path, png_path):
    """Plot every loss and PCK column of log.csv against the epoch into png_path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]  # log.csv counts from 0; the console's "Epoch 1/12" from 1
    fig, (ax_loss, ax_pck) = plt.subplots(1, 2, figsize=(11, 4))
    for key in rows[0]:
        values = [float(r[key]) if r[key] not in ("", "nan") else np.nan for r in rows]
        if key in ("loss", "val_loss"):
            ax_loss.plot(epochs, values, marker=".", label=key)
        elif "pck" in key:
            ax_pck.plot(epochs, values, marker=".", label=key, ls="--" if "baseline" in key else "-")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    ax_pck.set(xlabel="epoch", ylabel="PCK", ylim=(0, 1), title="validation PCK")
    for ax in (ax_loss, ax_pck):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_plot(png_path, fig, dpi=80)
    plt.close(fig)

# ----------------------------------------------------------------------------- callbacks


class SetEpoch(keras.callbacks.Callback):
    """Tell the training dataset which epoch it serves, so augmentation is f(seed, epoch)."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.epoch = epoch


class EpochClock(keras.callbacks.Callback):
    """One plain line per epoch for logs: epochs done (counted from 1, like Keras' "Epoch 1/12"),
    this epoch's time, the time since the run (or its resume) started and the ETA of the whole run."""

    def __init__(self, epochs, clock=None, stream=None):
        super().__init__()
        import time
        self.epochs, self.clock, self.stream = epochs, clock or time.monotonic, stream or sys.stdout
        self.started = self.epoch_started = None
        self.first = 0

    def on_train_begin(self, logs=None):
        self.started = self.clock()

    def on_epoch_begin(self, epoch, logs=None):
        if self.epoch_started is None:
            self.first = epoch            # a resumed run starts later: its ETA counts from there
        self.epoch_started = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        done = epoch + 1 - self.first
        left = self.epochs - epoch - 1
        eta = (now - self.started) / done * left
        finish = time_of_day(eta) if left else "done"
        print(f"epoch {epoch + 1}/{self.epochs}: {duration(now - self.epoch_started)}, elapsed "
              f"{duration(now - self.started)}, ETA {duration(eta)} ({finish})", file=self.stream, flush=True)


def time_of_day(seconds_from_now):
    """The local clock time `seconds_from_now` from now, e.g. "ends about 14:05"."""
    import datetime
    end = datetime.datetime.now() + datetime.timedelta(seconds=seconds_from_now)
    return f"ends about {end:%H:%M}"


class EpochPictures(keras.callbacks.Callback):
    """Every epoch: the original's pictures of a fixed validation batch, and the mean-pose
    baseline into the logs (so log.csv and curves.png show it beside val PCK)."""

    def __init__(self, batch, out_dir, baseline):
        super().__init__()
        self.batch, self.out_dir, self.baseline = batch, out_dir, baseline
        self.replica = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["baseline_pck@0.2"] = self.baseline
        trainer, network = self.model, self.model.network
        if backend.multi_process():
            network = self.replica = backend.local_replica(network, self.replica)
        images, keypoints = trainer.augment(self.batch)
        images_uint8 = np.clip((np.asarray(images) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        gt01, _ = trainer.codec.encode(np.asarray(keypoints), trainer.augment.size)
        pred01 = trainer.codec.from_tanh(network(images, training=False)[0])
        write_eval_pngs(os.path.join(self.out_dir, "eval"), epoch, images_uint8, gt01, pred01)


class SaveNetwork(keras.callbacks.Callback):
    """Save the trainer's inference network (never the augmentation) to a .keras file every
    epoch, or only when `monitor` reaches a new maximum; via a temporary file and a rename,
    so a kill never leaves half a checkpoint. `best`: the best value so far (from log.csv on --resume)."""

    def __init__(self, path, monitor=None, best=-np.inf):
        super().__init__()
        self.path, self.monitor, self.best = path, monitor, best

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is not None:
            value = (logs or {}).get(self.monitor)
            if value is None or not value > self.best:
                return
            self.best = value
        tmp = self.path[:-len(".keras")] + ".tmp.keras"
        self.model.network.save(tmp)
        os.replace(tmp, self.path)


class PlotCurves(keras.callbacks.Callback):
    """Redraw curves.png from log.csv after every epoch (so it survives --resume)."""

    def __init__(self, out_dir):
        super().__init__()
        self.out_dir = out_dir

    def on_epoch_end(self, epoch, logs=None):
        plot_curves(os.path.join(self.out_dir, "log.csv"), os.path.join(self.out_dir, "curves.png"))


def quarter_epoch(epochs: int) -> int:
    """The epoch (0-based) that ends a quarter of the way through `epochs`: the learning check."""
    return max(1, math.ceil(epochs / 4)) - 1


class LearningCheck(keras.callbacks.Callback):
    """Say when a run is not learning: one warning line if val PCK@0.2 is still below the
    mean-pose baseline a quarter of the way through, and a summary line at the end of every
    run with the final and best val PCK@0.2 beside the baseline."""

    def __init__(self, baseline, epochs):
        super().__init__()
        self.baseline, self.epochs = baseline, epochs
        self.last = self.best = None  # (epoch, val PCK@0.2)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get("val_pck@0.2")
        if value is None:
            return
        self.last = (epoch, float(value))
        if self.best is None or value > self.best[1]:
            self.best = self.last
        if epoch == quarter_epoch(self.epochs) and value < self.baseline:
            print(f"warning: not learning yet: val PCK@0.2 {value:.3f} after {epoch + 1} of {self.epochs} epochs is "
                  f"below the mean-pose baseline {self.baseline:.3f} (the summary line at the end says whether it "
                  "catches up; if not: check the data, train longer with --min-steps, or try another --lr)", flush=True)

    def on_train_end(self, logs=None):
        if self.last is None:
            return
        (epoch, value), (best_epoch, best) = self.last, self.best
        verdict = "beats" if value > self.baseline else "does NOT beat"
        print(f"summary: val PCK@0.2 {value:.3f} after {epoch + 1} epochs (best {best:.3f} at epoch {best_epoch + 1}) "
              f"{verdict} the mean-pose baseline {self.baseline:.3f}", flush=True)


class Backup(keras.callbacks.Callback):
    """The training state (weights, optimizer, epoch count) after every epoch, for --resume.

    Not keras.callbacks.BackupAndRestore: it overwrites backup/latest.weights.h5 in place and
    writes the epoch to a JSON file afterwards, so a kill while it writes leaves a truncated
    HDF5 that fails every --resume (or weights one epoch ahead of the epoch count). Here each
    backup goes to a temporary file that is renamed to backup/EPOCHS.weights.h5 (the number
    of finished epochs is in the name, so weights and count never disagree), the one before
    it is kept, and `restore` loads the newest that reads, skipping broken ones. Last in the
    callback list, so a backup of epoch N means log.csv and the checkpoints have epoch N.
    Kept after training: --resume --epochs MORE extends a finished run.
    """

    KEEP = 2
    SUFFIX = ".weights.h5"  # save_weights() insists on it

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def backups(self):
        """[(finished epochs, path)] of the complete backups, newest first (temporary files excluded)."""
        names = os.listdir(self.folder) if os.path.isdir(self.folder) else []
        stems = [n[:-len(self.SUFFIX)] for n in names if n.endswith(self.SUFFIX)]
        return sorted(((int(s), os.path.join(self.folder, s + self.SUFFIX)) for s in stems if s.isdigit()),
                      reverse=True)

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.folder, exist_ok=True)
        tmp = os.path.join(self.folder, "partial" + self.SUFFIX)
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, os.path.join(self.folder, f"{epoch + 1:04d}{self.SUFFIX}"))
        for _, old in self.backups()[self.KEEP:]:
            os.remove(old)

    def restore(self, model):
        """Load the newest backup that reads into `model` (compiled); the epochs it holds, 0 if none.

        A broken file (a kill or a full disk while it was written) is skipped with a note; one
        that reads but does not fit the model is an InputError (the run had other flags).
        """
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its variables are in the backup too
        broken = []
        for epochs, path in self.backups():
            try:
                model.load_weights(path)
            except (OSError, KeyError) as err:  # what h5py raises for truncated or garbled files
                print(f"note: skipped the broken backup {path} ({str(err).splitlines()[0]})", flush=True)
                broken.append(path)
                continue
            except ValueError as err:
                raise InputError(f"--resume: {path} does not fit this model ({str(err).splitlines()[0]})") from None
            return epochs
        if broken:
            raise InputError(f"--resume: no backup in {self.folder} could be read; delete it to start over")
        print(f"note: no backup in {self.folder} yet; starting at epoch 0", flush=True)
        return 0

# ----------------------------------------------------------------------------- training


@dataclass
class Config:
    """Everything a training run depends on (built from the command line in main())."""
    data: str
    out: str
    val_data: str | None = None
    epochs: int = 50
    batch_size: int = 8
    lr: float = 0.0            # 0: scaled_lr(batch_size)
    lr_schedule: str = "cosine"
    steps_per_epoch: int = 0   # 0: epoch_steps(...), at least min_steps in all
    min_steps: int = MIN_STEPS
    arch: str = "simple"
    size: int = 128
    width: float = 0.5
    depth: int = 1
    backbone_features: str | None = None
    init_weights: str | None = None
    loss: str = "fg_mse"
    augment: Augment = Augment()
    seed: int = 0
    resume: bool = False
    mixed_precision: bool = False
    distribute: str = "none"
    workers: int = 2
    processes: bool = False
    verbose: int = 1


def make_datasets(cfg: Config, shard=(0, 1)):
    """(train, val) FigureBatches: --val-data, or an 80/20 split of --data by image id.

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
    if val.n_joints != train.n_joints:
        raise InputError(f"--val-data {val_path} has {val.n_joints} joints, --data {cfg.data} {train.n_joints}")
    if train.size % 32:
        raise InputError(f"--data {cfg.data} has {train.size}x{train.size} canvases; the network needs a "
                         "multiple of 32: give --size")
    if val.canvas_size != train.canvas_size:  # the device augmentation is built for one canvas size
        raise InputError(f"--val-data {val_path} has {val.canvas_size}x{val.canvas_size} canvases, "
                         f"--data {cfg.data} {train.canvas_size}x{train.canvas_size}")
    return train, val


def baseline_pck(train, val, threshold=0.2):
    """PCK of predicting the training figures' mean pose for every validation figure."""
    pose = mean_pose(train.input_keypoints())
    gt = val.input_keypoints()
    return pck(np.broadcast_to(pose, gt[..., :2].shape), gt, figure_norm_size(val.size), threshold)


def tensorboard(log_dir):
    """[TensorBoard callback] if the tensorboard package is installed, else [] with a note."""
    if importlib.util.find_spec("tensorboard") is None:
        print("note: tensorboard is not installed; no tb/ logs (pip install tensorboard)", flush=True)
        return []
    return [keras.callbacks.TensorBoard(log_dir, write_graph=False, profile_batch=0)]


def make_callbacks(cfg: Config, train, val, baseline, backup, best=-np.inf):
    """Callback list in the order that matters: pictures and baseline first, then checkpoints/logs, backup last."""
    out = cfg.out
    return [
        SetEpoch(train),
        EpochPictures(val[0], out, baseline),
        SaveNetwork(os.path.join(out, "best.keras"), monitor="val_pck@0.2", best=best),
        SaveNetwork(os.path.join(out, "last.keras")),
        keras.callbacks.CSVLogger(os.path.join(out, "log.csv"), append=cfg.resume),
        PlotCurves(out),
        EpochClock(cfg.epochs),
        *tensorboard(os.path.join(out, "tb")),
        LearningCheck(baseline, cfg.epochs),
        backup,
    ]


# What a run is: --resume refuses to change these (they change the model or the data; --seed
# picks the validation split), nor the data's joints and input size (train() reads them).
# Everything else (--epochs, --workers, --lr, ...) may change.
RUN_IDENTITY = ("data", "val_data", "arch", "size", "width", "depth", "loss", "backbone_features", "seed")


def check_resume(cfg: Config, facts):
    """InputError unless --out holds a run (config.json) made with the same model and data.

    The list of differences is one line: every RUN_IDENTITY flag and data fact that differs.
    """
    path = os.path.join(cfg.out, "config.json")
    if not os.path.exists(path):
        raise InputError(f"--resume: {cfg.out} holds no run to resume (no config.json); drop --resume to start one")
    try:
        with open(path) as f:
            run = json.load(f)
        if not isinstance(run, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise InputError(f"--resume: cannot read {path} ({err})") from None
    now = {**asdict(cfg), **facts}
    keys = [k for k in (*RUN_IDENTITY, *facts) if k in run and not (k == "size" and "input_size" in run)]
    described = {"input_size": "--size {}", "joints": "{} joints in --data"}  # size: the effective one
    changed = [described.get(k, f"--{k.replace('_', '-')} {{}}").format(now[k]) + f" (the run has {run[k]})"
               for k in keys if run[k] != now[k]]
    if changed:
        raise InputError(f"--resume: {cfg.out} was trained with other settings: {'; '.join(changed)}; "
                         "resume with the run's flags, or train into another --out")


def write_atomic(path, text):
    """Write `text` to `path` via a temporary file and a rename: a kill never leaves half a file."""
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def prepare_out_dir(cfg: Config, facts):
    """Create --out and write config.json (with the data's facts, for --resume to compare);
    without --resume, clear an old backup/ and log.csv so the run starts fresh."""
    try:
        os.makedirs(cfg.out, exist_ok=True)
        if not cfg.resume:
            shutil.rmtree(os.path.join(cfg.out, "backup"), ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(cfg.out, "log.csv"))
        write_atomic(os.path.join(cfg.out, "config.json"), json.dumps({**asdict(cfg), **facts}, indent=1))
    except OSError as err:
        raise InputError(f"cannot create --out {cfg.out} ({err.strerror or err})") from None


def write_split(cfg: Config, train, val):
    """split.json in --out: which figures trained and which validated (image ids), so that
    evaluate.py --run scores the held-out images only and can say when figures were trained on."""
    val_ids = np.unique(val.small_fields()["image_id"]).astype(int).tolist()
    train_ids = np.unique(train.small_fields()["image_id"]).astype(int).tolist()
    split = {"train_data": cfg.data, "val_data": cfg.val_data or cfg.data,
             "held_out": not cfg.val_data, "seed": cfg.seed,
             "note": "held_out: the validation images are a seeded 20% of --data's images (never trained on)"
                     if not cfg.val_data else "validation figures: all of --val-data",
             "val_image_ids": val_ids, "train_image_ids": train_ids}
    try:
        write_atomic(os.path.join(cfg.out, "split.json"), json.dumps(split))
    except OSError as err:
        raise InputError(f"cannot write {cfg.out}/split.json ({err.strerror or err})") from None


def trim_log(path, epochs):
    """Keep only the first `epochs` epochs' rows of log.csv (the resumed run writes the rest
    again: a kill may have left a row, or half of one, that no backup covers); returns them."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    header = rows[0]
    keep = [r for r in rows[1:] if len(r) == len(header) and r[0].isdigit() and int(r[0]) < epochs]
    text = io.StringIO()
    csv.writer(text).writerows([header, *keep])  # the dialect CSVLogger writes
    write_atomic(path, text.getvalue())
    return [dict(zip(header, r)) for r in keep]


def init_from(network, path):
    """Copy the weights of a model.py .keras file of the same architecture into `model` (fine-tuning)."""
    source = load_trained_model(path)
    shapes = [w.shape for w in source.get_weights()]
    if shapes != [w.shape for w in network.get_weights()]:
        raise InputError(f"--init-weights {path} has another architecture than --arch/--width/--depth/--size")
    network.set_weights(source.get_weights())


def train(cfg: Config, extra_callbacks=()):
    """Train as configured; returns the keras History. Writes everything under cfg.out."""
    process, processes = backend.join_processes(cfg.distribute)
    if process > 0:  # one writer per folder: the chief's files are the run's
        cfg = replace(cfg, out=os.path.join(cfg.out, f"worker{process}"))
    keras.utils.set_random_seed(cfg.seed)
    keras.mixed_precision.set_dtype_policy(backend.dtype_policy(cfg.mixed_precision))
    train_ds, val_ds = make_datasets(cfg, (process, processes))
    facts = {"joints": train_ds.n_joints, "input_size": train_ds.size}
    if cfg.resume:
        check_resume(cfg, facts)
    codec = ARCH_CODECS[cfg.arch]
    backup = Backup(os.path.join(cfg.out, "backup"))
    with backend.make_strategy(cfg.distribute):
        network = build_model(cfg.arch, train_ds.n_joints, train_ds.size, cfg.width, cfg.depth,
                              backbone=cfg.backbone_features)
        if cfg.init_weights:
            init_from(network, cfg.init_weights)
        trainer = make_trainer(network, val_ds, codec, cfg.loss)
        total_steps = cfg.epochs * len(train_ds)
        lr = cfg.lr or scaled_lr(cfg.batch_size)
        compile_model(trainer, lr, total_steps, cfg.lr_schedule)
        prepare_out_dir(cfg, facts)  # only now: a run refused above writes nothing
        write_split(cfg, train_ds, val_ds)
        start = backup.restore(trainer) if cfg.resume else 0
    logged = trim_log(os.path.join(cfg.out, "log.csv"), start) if cfg.resume else []
    pcks = [float(row.get("val_pck@0.2") or "nan") for row in logged]
    best = max((p for p in pcks if np.isfinite(p)), default=-np.inf)  # best.keras holds it already
    if start >= cfg.epochs:
        print(f"note: {cfg.out} has trained {start} epochs already (--epochs {cfg.epochs}); nothing to do",
              flush=True)
    baseline = baseline_pck(train_ds, val_ds)
    print(f"{network.name}: {network.count_params() / 1e6:.2f} M parameters, "
          f"{count_flops(network) / 1e9:.2f} GFLOPs per {train_ds.size}x{train_ds.size} figure; "
          f"{len(train_ds.indices)} training / {len(val_ds.indices)} validation figures; "
          f"mean-pose baseline val PCK@0.2 {baseline:.3f}", flush=True)
    print(f"schedule: {cfg.epochs} epochs x {len(train_ds)} steps of {cfg.batch_size} = {total_steps} steps; "
          f"Adam, peak lr {lr:.3g}" + (f" ({'--lr' if cfg.lr else 'sqrt-scaled to the batch'}), "
          f"{warmup_steps(total_steps)} warm-up steps, cosine to {FINAL_LR_FRACTION:g} x peak"
          if cfg.lr_schedule == "cosine" else ", constant"), flush=True)
    callbacks = make_callbacks(cfg, train_ds, val_ds, baseline, backup, best)
    fit_val = val_ds if cfg.distribute == "none" else val_ds.whole_batches((process, processes))
    return trainer.fit(train_ds, validation_data=fit_val, epochs=cfg.epochs, initial_epoch=start,
                       verbose=cfg.verbose, callbacks=list(extra_callbacks) + callbacks)


# ----------------------------------------------------------------------------- command line
def input_size(text):
    """An argparse type for --size: 0 (the data's canvas size) or a multiple of 32 >= 32."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value != 0 and (value < 32 or value % 32):
        raise argparse.ArgumentTypeError(f"must be 0 or a multiple of 32 >= 32, not {text!r}")
    return value


def build_parser():
    """The command line: every flag documented in --help, numbers checked against their ranges at parse time."""
    p = OneLineParser(prog="model.py", description=__doc__.split("\n\n")[0],
                      formatter_class=HelpFormatter)
    p.add_argument("--config", metavar="runs/NAME/config.json",
                   help="start from the flags of an earlier run (its config.json); flags given as well "
                        "override them; needs --out (a new folder); on/off flags it sets cannot be turned off")
    p.add_argument("--data", default="coco.npy", help="training figures (coco.npy from coco_process.py)")
    p.add_argument("--val-data", default=None,
                   help="validation figures (same joints and canvas size as --data); omitted: hold out 20%% "
                        "of --data's images")
    p.add_argument("--out", default="runs/default", help="run folder for checkpoints, logs and pictures")
    p.add_argument("--epochs", type=int_in(1), default=50,
                   help="number of epochs (>= 1); on a small set each epoch is lengthened to reach --min-steps")
    p.add_argument("--batch-size", type=int_in(1), default=8,
                   help="global batch size (>= 1); the default --lr follows it")
    p.add_argument("--lr", type=number(0), default=0.0,
                   help=f"peak Adam learning rate (>= 0); 0: {REFERENCE_LR:g} x sqrt(batch / {REFERENCE_BATCH}) "
                        "(square-root scaling with the global batch: 1e-3 at 32, 2e-3 at 128)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="cosine",
                   help=f"cosine: linear warm-up over min({WARMUP_STEPS}, steps / 10) optimiser steps, then cosine "
                        f"decay to {FINAL_LR_FRACTION:g} x the peak at the last step; constant: the peak throughout")
    p.add_argument("--min-steps", type=int_in(0), default=MIN_STEPS,
                   help="optimiser steps the whole run takes at least (>= 0): when one pass over --data per "
                        "epoch is fewer, every epoch takes ceil(min-steps / epochs) batches")
    p.add_argument("--steps-per-epoch", type=int_in(0), default=0,
                   help="batches per epoch (>= 0; 0: one full pass, or more to reach --min-steps)")
    p.add_argument("--arch", choices=sorted(ARCH_CODECS), default="simple",
                   help="simple: maps at stride 4; original: the original network, maps at full size")
    p.add_argument("--size", type=input_size, default=128,
                   help="network input side in pixels (0: the data's canvas size, else a multiple of 32 >= 32); "
                        "128 learns from a few hundred figures on a CPU, 256 is the usual full-COCO input")
    p.add_argument("--width", type=number(0, above=True), default=0.5,
                   help="channel multiplier (> 0; 0.5: 0.37 M parameters, 1: 1.47 M)")
    p.add_argument("--depth", type=int_in(1), default=1, help="residual blocks per stage (>= 1; scales depth)")
    p.add_argument("--backbone-features", choices=sorted(BACKBONES), default=None,
                   help="concat frozen ImageNet features at the bottleneck (weights must be in "
                        "$KERAS_HOME/models, default ~/.keras/models)")
    p.add_argument("--init-weights", default=None,
                   help="fine-tuning: start from the weights of a model.py .keras file of the same --arch, --size, "
                        "--width and --depth (e.g. one trained on the synthetic sample); the schedule starts at step 0")
    p.add_argument("--loss", choices=("mse", "fg_mse"), default="fg_mse",
                   help="fg_mse: the original's per-joint MSE with foreground pixels weighted x10 (default); "
                        "mse: the original's plain loss, which collapses to all-background maps on short "
                        "schedules (val PCK@0.1 0.01 vs 0.93 after the 8-epoch sample run)")
    p.add_argument("--flip", type=number(0, 1), default=0.5,
                   help="horizontal flip probability, in [0, 1] (with left/right swap)")
    p.add_argument("--rotation", type=number(0), default=40.0,
                   help="max rotation, degrees (>= 0; SimpleBaseline's +-40)")
    p.add_argument("--scale-min", type=number(0, above=True), default=0.7,
                   help="min zoom factor (> 0; SimpleBaseline's scale +-30%%)")
    p.add_argument("--scale-max", type=number(0, above=True), default=1.3,
                   help="max zoom factor (> 0, >= --scale-min)")
    p.add_argument("--shift", type=number(0), default=0.05, help="max shift, fraction of the canvas side (>= 0)")
    p.add_argument("--color-jitter", type=number(0), default=0.0, help="colour jitter strength (>= 0; 0: off)")
    p.add_argument("--no-augment", action="store_true", help="turn all augmentation off")
    p.add_argument("--seed", type=int_in(0), default=0,
                   help="random seed (>= 0: weights, split, order, augmentation)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest complete backup (backup/; a broken newest "
                        "one is skipped for the one before). Refused when --out has no config.json (no run "
                        "there), or when a flag that changes the model or the data differs from the run's "
                        "(--data, --val-data, --arch, --size, --width, --depth, --loss, --backbone-features, "
                        "--seed); others, e.g. --epochs to train longer, may change. With no backup yet (killed "
                        "in its first epoch) it starts at epoch 0, with a note")
    p.add_argument("--mixed-precision", action="store_true", help="float16 (GPU) / bfloat16 (CPU) compute")
    p.add_argument("--distribute", choices=("none", "mirrored", "multiworker"), default="none",
                   help="mirrored: all GPUs of this machine (tf.distribute, or DataParallel on JAX); "
                        "multiworker: several machines, JAX backend only, every process started with "
                        "KERAS_DISTRIBUTION_JOB_ADDRESSES/_NUM_PROCESSES/_PROCESS_ID (see README)")
    p.add_argument("--cpu-devices", type=int_in(0), default=0,
                   help="split the CPU into N logical devices (>= 0; testing)")
    p.add_argument("--workers", type=int_in(1), default=2,
                   help="threads (or processes, with --worker-processes) that read batches (>= 1); the device "
                        "does the augmentation, so 2 keep a GPU fed on most machines")
    p.add_argument("--worker-processes", action="store_true",
                   help="read batches in worker processes instead of threads")
    p.add_argument("--quiet", action="store_true",
                   help="no per-batch progress bar (also off when stdout is not a terminal, e.g. a log file): "
                        "Keras' line per epoch, then one with its time, the elapsed time and the run's ETA")
    return p


# config.json keys that are no flag: the data's facts (checked by --resume), the run's own folder
# and --resume (a reproduction starts afresh in a new --out).
CONFIG_NOT_FLAGS = ("joints", "input_size", "out", "resume")
CONFIG_RENAMED = {"processes": "worker_processes"}


def config_argv(path):
    """The flags that reproduce the run whose config.json is `path`, as an argv list (given before
    the command line's own flags, so that those win). ValueError (one line) for an unreadable file."""
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"--config: cannot read {path} ({getattr(err, 'strerror', None) or err})") from None
    if not isinstance(config, dict) or "data" not in config:
        raise ValueError(f"--config: {path} is not the config.json of a model.py run")
    flags = []
    augment = config.pop("augment", None) or {}
    for key, value in {**config, **augment}.items():
        if key in CONFIG_NOT_FLAGS or value is None:
            continue
        name = "--" + CONFIG_RENAMED.get(key, key).replace("_", "-")
        if key == "verbose":
            flags += ["--quiet"] if value == 2 else []
        elif isinstance(value, bool):
            flags += [name] if value else []
        else:
            flags += [name, str(value)]
    return flags


def parse_args(argv=None):
    """Command-line flags -> argparse.Namespace; a usage mistake exits 2 with one line.

    With --config runs/NAME/config.json, the run's flags come first and the command line's
    own flags override them (--out must be given: a new folder for the new run)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--out")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        if not known.out:
            parser.error("--config reproduces a run into a new folder: give --out")
        try:
            argv = config_argv(known.config) + argv
        except ValueError as err:
            parser.error(str(err))
    args = parser.parse_args(argv)
    if args.scale_min > args.scale_max:
        parser.error(f"--scale-min {args.scale_min:g} is above --scale-max {args.scale_max:g}")
    return args


def check_inputs(cfg: Config):
    """InputError (one line naming the flag) for the cheap mistakes, before any work; make_datasets
    and train() check what needs the data read (the split, joints, --resume against the run)."""
    check_out_dir(cfg.out)
    try:
        for flag, path in (("--data", cfg.data), ("--val-data", cfg.val_data)):
            if path:
                try:
                    FigureFile(path)  # validates the file, its length and its joints; reads nothing
                except (FileNotFoundError, ValueError) as err:
                    raise InputError(f"{flag} {err}") from None
        if cfg.backbone_features:
            backbone_weights(cfg.backbone_features)
        if cfg.init_weights:
            try:
                load_trained_model(cfg.init_weights)
            except ValueError as err:
                raise InputError(f"--init-weights {err}") from None
        backend.check_distribute(cfg.distribute)
    except (FileNotFoundError, ValueError) as err:
        raise InputError(str(err)) from None


def main(argv=None):
    args = parse_args(argv)
    augment = NO_AUGMENT if args.no_augment else Augment(
        args.flip, args.rotation, args.scale_min, args.scale_max, args.shift, args.color_jitter)
    cfg = Config(data=args.data, out=args.out, val_data=args.val_data, epochs=args.epochs,
                 batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule,
                 steps_per_epoch=args.steps_per_epoch, min_steps=args.min_steps, arch=args.arch, size=args.size,
                 width=args.width, depth=args.depth, backbone_features=args.backbone_features,
                 init_weights=args.init_weights, loss=args.loss, augment=augment, seed=args.seed, resume=args.resume,
                 mixed_precision=args.mixed_precision, distribute=args.distribute,
                 workers=args.workers, processes=args.worker_processes,
                 verbose=2 if args.quiet or not sys.stdout.isatty() else 1)  # no progress bar in a log file
    try:  # every user mistake and broken input ends here as one line
        check_inputs(cfg)
        if args.cpu_devices:
            backend.set_cpu_devices(args.cpu_devices)
        train(cfg)
    except InputError as err:
        sys.exit(f"model.py: error: {err}")
    except OSError as err:  # e.g. a full disk mid-run: the backups written so far stay resumable
        sys.exit(f"model.py: error: {err}; continue with --resume once fixed")
    except KeyboardInterrupt:
        sys.exit("model.py: interrupted; continue with --resume")


if __name__ == "__main__":
    main()
