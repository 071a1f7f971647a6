"""The training run's callbacks: what happens after every epoch, and in which order.

    trainer.fit(train, validation_data=val, callbacks=make_callbacks(cfg, train, val, baseline, backup))

First of all, after every step: a non-finite loss stops the run before anything of that epoch
is saved (StopOnNonFinite). Per epoch: the dataset learns its epoch (augmentation is f(seed, epoch)), the pictures of a
fixed validation batch and the mean-pose baseline (eval/, log.csv), last.keras (and best.keras),
log.csv and curves.png, one plain progress line, TensorBoard (tb/), the learning check and,
last, the backup that --resume restores (backup/). Files go through a temporary name and a
rename, so a kill never leaves half of one.
"""
import datetime
import importlib.util
import math
import os
import sys
import time

import h5py
import keras
import numpy as np

from figure_pose.core import backend
from figure_pose.core.atomic import copy_atomic
from figure_pose.core.cli import InputError, Terminated, duration
from figure_pose.core.pictures import plot_curves, write_eval_pngs


class NonFiniteTraining(Exception):
    """The loss or the weights became NaN or infinite: the run stops, nothing of it is saved."""


def non_finite_variables(variables):
    """The paths of the variables holding a NaN or an infinity ([] if all are finite)."""
    return [v.path for v in variables if not np.isfinite(keras.ops.convert_to_numpy(v)).all()]


def refuse_non_finite(model, what):
    """NonFiniteTraining unless every weight of `model` is finite: no checkpoint or backup of a broken state."""
    bad = non_finite_variables(model.weights)
    if bad:
        raise NonFiniteTraining(f"the weights hold NaN or infinite values ({len(bad)} of {len(model.weights)} variables, first {bad[0]}); "
                                f"{what} not written, the one before stays")


class StopOnSignal(keras.callbacks.Callback):
    """Raise Terminated after the step in which a signal was received (`received`, the list that
    cli.sigterm_interrupts fills): the handler's own exception is lost when the signal lands in a
    finaliser or a garbage-collection callback, and the run would then train on to the end."""

    def __init__(self, received):
        super().__init__()
        self.received = received

    def on_train_batch_end(self, batch, logs=None):
        if self.received:
            raise Terminated(self.received[-1])


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop at the first step whose loss is NaN or infinite, before any callback saves that state.

    Keras' TerminateOnNaN(raise_error=True), with a message: Keras reports the epoch's running
    mean, which is non-finite from the first bad step on. It raises in on_train_batch_end, so
    no validation and no on_epoch_end runs on the broken weights: best.keras, last.keras and
    the backups keep the last finite epoch. First in the callback list: its on_epoch_end checks
    the weights before the savers do.

    Under float16 loss scaling (Keras' LossScaleOptimizer, --mixed-precision on a GPU) a
    non-finite step is one the optimizer skips with a smaller scale, not a failure: there it
    is noted, and only non-finite weights at the epoch's end stop the run. The check reads
    the loss Keras has already made a Python float (TensorFlow: every step anyway); async_safe
    keeps JAX's callbacks off the training thread.
    """

    async_safe = True

    def __init__(self, epochs, steps, hint=""):
        super().__init__()
        self.epochs, self.steps, self.hint = epochs, steps, hint
        self.epoch, self.skipped = 0, None   # skipped: (epoch, step, loss) of a non-finite step loss scaling skipped

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.skipped = epoch, None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(loss):
            return
        if isinstance(self.model.optimizer, keras.optimizers.LossScaleOptimizer):
            self.skipped = self.skipped or (self.epoch, batch, loss)
            return
        raise NonFiniteTraining(self.message(f"the training loss became {loss}", batch))

    def on_epoch_end(self, epoch, logs=None):
        if non_finite_variables(self.model.weights):
            step = self.skipped[1] if self.skipped else self.steps - 1
            raise NonFiniteTraining(self.message("the weights became NaN or infinite", step))
        if self.skipped:
            print(f"note: epoch {epoch + 1}: a non-finite loss ({self.skipped[2]}) from step {self.skipped[1] + 1} "
                  "on; float16 loss scaling skipped those steps and the weights are finite", flush=True)

    def message(self, what, batch):
        """The one line a stopped run ends with: where, what is kept, the likely causes, what next."""
        kept = (f"nothing of it saved: last.keras and backup/ hold epoch {self.epoch}" if self.epoch
                else "nothing saved: no epoch had finished")
        return (f"{what} in epoch {self.epoch + 1}/{self.epochs}, step {batch + 1}/{self.steps}; training stopped, "
                f"{kept}. Likely causes: a learning rate too high{self.hint}, float16 overflow "
                "(--mixed-precision) or bad data; continue with --resume and a lower --lr")


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
    end = datetime.datetime.now() + datetime.timedelta(seconds=seconds_from_now)
    return f"ends about {end:%H:%M}"


class EpochPictures(keras.callbacks.Callback):
    """Every epoch: the original's pictures of a fixed validation batch, and the mean-pose
    baseline into the logs (so log.csv and curves.png show it beside val PCK).

    The batch is not augmented, so its input and target maps are made once; each epoch only
    predicts, through the network's compiled predict step: an eager call runs op by op, and
    on JAX compiles every op on its own (6.5 s for the first call on a CPU, 1.3 s this way).
    A --run-eagerly run predicts eagerly (compile_model sets the network's run_eagerly): its
    few steps would not repay tracing a predict function (0.7-1.2 s against 0.3 s on a CPU).
    """

    def __init__(self, batch, out_dir, baseline):
        super().__init__()
        self.batch, self.out_dir, self.baseline = batch, out_dir, baseline
        self.replica, self.inputs = None, None

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["baseline_pck@0.2"] = self.baseline
        trainer, network = self.model, self.model.network
        if backend.multi_process():
            network = self.replica = backend.local_replica(network, self.replica)
        if self.inputs is None:
            images, keypoints = (np.asarray(a) for a in trainer.augment(self.batch))   # (B, S, S, 3), (B, J, 3)
            images_uint8 = np.clip((images + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
            self.inputs = images, images_uint8, trainer.codec.encode(keypoints, trainer.augment.size)[0]
        images, images_uint8, gt01 = self.inputs
        pred01 = trainer.codec.from_tanh(network.predict_on_batch(images)[0])    # (B, M, M, J)
        write_eval_pngs(os.path.join(self.out_dir, "eval"), epoch, images_uint8, gt01, pred01)


class SaveNetwork(keras.callbacks.Callback):
    """Save the trainer's inference network (never the augmentation) to `last` every epoch and
    copy that file to `best` when `monitor` reaches a new maximum: a file copy, as a second
    .keras save would cost as much again (0.8 s for the 0.37 M-parameter network on a CPU).
    Both go through a temporary file and a rename, so a kill never leaves half a checkpoint.
    `best_value`: the best so far (from log.csv on --resume)."""

    def __init__(self, last, best, monitor, best_value=-np.inf):
        super().__init__()
        self.last, self.best, self.monitor, self.best_value = last, best, monitor, best_value

    def on_epoch_end(self, epoch, logs=None):
        refuse_non_finite(self.model, self.last)
        tmp = self.last[:-len(".keras")] + ".tmp.keras"  # keras' save insists on the .keras suffix
        self.model.network.save(tmp)
        os.replace(tmp, self.last)
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best_value:
            self.best_value = value
            copy_atomic(self.last, self.best)


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


def seed_states(model):
    """The state variables of `model`'s SeedGenerators (Dropout's), in the model's variable order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


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

    save_weights leaves out the random state of Dropout (its SeedGenerator counts the draws),
    so a resumed run would drop other units than the unbroken one; each backup also holds
    those states (SEED_STATES), and a resumed run trains exactly as the unbroken one.
    """

    KEEP = 2
    SUFFIX = ".weights.h5"  # save_weights() insists on it
    SEED_STATES = "seed_generator_states"  # (G, 2) int: every SeedGenerator's [seed, draws], in variable order

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
        refuse_non_finite(self.model, f"the backup of epoch {epoch + 1}")
        os.makedirs(self.folder, exist_ok=True)
        tmp = os.path.join(self.folder, "partial" + self.SUFFIX)
        self.model.save_weights(tmp, overwrite=True)
        states = seed_states(self.model)
        if states:
            with h5py.File(tmp, "a") as f:
                f.create_dataset(self.SEED_STATES, data=np.stack([keras.ops.convert_to_numpy(v) for v in states]))
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
                with h5py.File(path, "r") as f:
                    saved = f[self.SEED_STATES][()] if self.SEED_STATES in f else []
            except (OSError, KeyError) as err:  # what h5py raises for truncated or garbled files
                print(f"note: skipped the broken backup {path} ({str(err).splitlines()[0]})", flush=True)
                broken.append(path)
                continue
            except ValueError as err:
                raise InputError(f"--resume: {path} does not fit this model ({str(err).splitlines()[0]})") from None
            for variable, value in zip(seed_states(model), saved):
                variable.assign(value)
            return epochs
        if broken:
            raise InputError(f"--resume: no backup in {self.folder} could be read; delete it to start over")
        print(f"note: no backup in {self.folder} yet; starting at epoch 0", flush=True)
        return 0


def tensorboard(log_dir):
    """[TensorBoard callback] if it can write here, else [] with a note.

    Keras' callback writes through `tensorflow.summary` on every backend, so a JAX-only
    environment with the tensorboard package (a GPU box without TensorFlow) gets the note too.
    """
    missing = [name for name in ("tensorboard", "tensorflow") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"note: {' and '.join(missing)} not installed; no tb/ logs (Keras' TensorBoard callback "
              "writes through tensorflow.summary)", flush=True)
        return []
    return [keras.callbacks.TensorBoard(log_dir, write_graph=False, profile_batch=0)]


def make_callbacks(cfg, train, val, baseline, backup, best=-np.inf, lr=None):
    """The callbacks of a TrainConfig's run, in the order that matters: the non-finite stop first,
    pictures and baseline, then checkpoints and logs, the backup last. `best`: the best val PCK@0.2
    so far (--resume); `lr`: the peak learning rate, for the stop's message."""
    out = cfg.out
    return [
        StopOnNonFinite(cfg.epochs, len(train), f" (peak lr {lr:.3g})" if lr else ""),
        SetEpoch(train),
        EpochPictures(val[0], out, baseline),
        SaveNetwork(os.path.join(out, "last.keras"), os.path.join(out, "best.keras"), "val_pck@0.2", best),
        keras.callbacks.CSVLogger(os.path.join(out, "log.csv"), append=cfg.resume),
        PlotCurves(out),
        EpochClock(cfg.epochs),
        *tensorboard(os.path.join(out, "tb")),
        LearningCheck(baseline, cfg.epochs),
        backup,
    ]
