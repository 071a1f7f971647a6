"""Train the figure pose network: a U-Net of pre-activation residual bottlenecks.

    python model.py --data coco.npy --val-data coco_val.npy --epochs 50 --out runs/NAME

The network maps a figure canvas (S x S x 3 in [-1, 1]) to one confidence map per joint
at S / 4 (stride 4, sigma 2 map pixels, the resolution coco.npy stores maps at), plus two
deep-supervision side outputs. `--arch original` builds a faithful port of the original
network (REFERENCE.md section 2, maps at full resolution) for comparisons.

Training runs at device speed: the host only reads stored bytes (figure_dataset.FigureBatches)
and the training model (training.FigureTrainer) augments, renders the target maps, computes
the loss and PCK on the device. Everything there uses `keras.ops`, so the same code runs on the
TensorFlow (default) and JAX backends (KERAS_BACKEND=jax).

Writes under --out: best.keras (best val PCK@0.2), last.keras, log.csv, curves.png, tb/
(TensorBoard), eval/EPOCH_*.png (a fixed validation batch; EPOCH counted from 0, as log.csv), config.json (the flags and the
data's joints and input size, which --resume checks), split.json (the training and the
validation image ids, for evaluate.py --run) and backup/ (for --resume). Checkpoints,
config.json and backups go through a temporary file and a rename, so a kill never leaves half
of one; --resume cuts log.csv back to the epochs of the backup it restores. An --out that holds a
run is refused unless --resume or --overwrite says what to do with it, and a run locks its folder
(.lock) while it trains, so a second process there is refused. A NaN or infinite loss stops the
run before anything of that epoch is saved; SIGTERM ends it as Ctrl-C does (exit 143, resumable).

This script is the driver; the flags and their defaults are train_config.TrainConfig, the loss
and schedule training.py, the per-epoch work callbacks.py, the run folder's rules run_folder.py.
"""
import argparse
import gc
import os
import signal
import sys
from dataclasses import replace

from figure_pose.core import backend

keras = backend.start_keras()  # a script: TensorFlow's start-up lines silenced before any keras import

from figure_pose.core.cli import InputError, Terminated, check_out_dir, sigterm_interrupts  # noqa: E402
from figure_pose.core.confidence_maps import ARCH_CODECS  # noqa: E402
from figure_pose.data.figure_dataset import FigureFile  # noqa: E402
from figure_pose.training.callbacks import Backup, NonFiniteTraining, StopOnSignal, make_callbacks  # noqa: E402
from figure_pose.training.network import backbone_weights, build_model, count_flops, load_trained_model  # noqa: E402
from figure_pose.training.run_folder import (FolderLock, best_logged, check_new_run, check_resume,  # noqa: E402
                                             prepare_out_dir, trim_log, write_split)
from figure_pose.training.train_config import build_parser, config_argv, config_from_args  # noqa: E402
from figure_pose.training.training import (FINAL_LR_FRACTION, baseline_pck, compile_model, init_from,  # noqa: E402
                                           make_datasets, make_trainer, scaled_lr, warmup_steps)


def train(cfg, extra_callbacks=()):
    """Train as a TrainConfig says; returns the keras History. Writes everything under cfg.out."""
    process, processes = backend.join_processes(cfg.distribute)
    if process > 0:  # one writer per folder: the chief's files are the run's
        cfg = replace(cfg, out=os.path.join(cfg.out, f"worker{process}"))
    keras.utils.set_random_seed(cfg.seed)
    keras.mixed_precision.set_dtype_policy(backend.dtype_policy(cfg.mixed_precision))
    train_ds, val_ds = make_datasets(cfg, (process, processes))
    facts = {"joints": train_ds.n_joints, "input_size": train_ds.size}
    if cfg.resume:
        check_resume(cfg, facts)
    backup = Backup(os.path.join(cfg.out, "backup"))
    lock = FolderLock(cfg.out) if process == 0 else None  # the chief's; taken when the folder is made
    try:
        trainer, start = start_run(cfg, train_ds, val_ds, facts, backup, lock)
        best = best_logged(trim_log(os.path.join(cfg.out, "log.csv"), start)) if cfg.resume else -float("inf")
        if start >= cfg.epochs:
            print(f"note: {cfg.out} has trained {start} epochs already (--epochs {cfg.epochs}); nothing to do",
                  flush=True)
        baseline = baseline_pck(train_ds, val_ds)
        describe_run(cfg, trainer, train_ds, val_ds, baseline)
        callbacks = make_callbacks(cfg, train_ds, val_ds, baseline, backup, best, peak_lr(cfg))
        fit_val = val_ds if cfg.distribute == "none" else val_ds.whole_batches((process, processes))
        # shuffle=False: FigureBatches orders the figures itself, as f(seed, pass); Keras' own shuffle of
        # the batch order draws from Python's global RNG, which a --resume cannot replay
        return trainer.fit(train_ds, validation_data=fit_val, epochs=cfg.epochs, initial_epoch=start,
                           shuffle=False, verbose=cfg.verbose, callbacks=list(extra_callbacks) + callbacks)
    finally:
        if lock is not None:
            lock.release()


def peak_lr(cfg):
    """The peak learning rate: --lr, or the default scaled to the global batch."""
    return cfg.lr or scaled_lr(cfg.batch_size)


def start_run(cfg, train_ds, val_ds, facts, backup, lock=None):
    """(compiled FigureTrainer, epochs already trained): the network built (from --init-weights if
    given) under the distribution strategy, the run folder written and locked (`lock`, a FolderLock),
    a --resume backup restored. The run folder is written only now: a run refused before this
    writes nothing."""
    with backend.make_strategy(cfg.distribute):
        network = build_model(cfg.arch, train_ds.n_joints, train_ds.size, cfg.width, cfg.depth, cfg.backbone,
                              cfg.backbone_weights, train_batchnorm=cfg.backbone_batchnorm == "train")
        if cfg.init_weights:
            init_from(network, cfg.init_weights)
        trainer = make_trainer(network, val_ds, ARCH_CODECS[cfg.arch], cfg.loss)
        compile_model(trainer, peak_lr(cfg), cfg.epochs * len(train_ds), cfg.lr_schedule, cfg.run_eagerly,
                      cfg.backbone_lr_scale, cfg.backbone_frozen_steps)
        prepare_out_dir(cfg, facts, lock)
        write_split(cfg, train_ds, val_ds)
        start = backup.restore(trainer) if cfg.resume else 0
    return trainer, start


def describe_run(cfg, trainer, train_ds, val_ds, baseline):
    """The lines a run starts with: the network and the data, the schedule, the backbone's fine-tuning."""
    network, total_steps, lr = trainer.network, cfg.epochs * len(train_ds), peak_lr(cfg)
    print(f"{network.name}: {network.count_params() / 1e6:.2f} M parameters, "
          f"{count_flops(network) / 1e9:.2f} GFLOPs per {train_ds.size}x{train_ds.size} figure; "
          f"{len(train_ds.indices)} training / {len(val_ds.indices)} validation figures; "
          f"mean-pose baseline val PCK@0.2 {baseline:.3f}", flush=True)
    print(f"schedule: {cfg.epochs} epochs x {len(train_ds)} steps of {cfg.batch_size} = {total_steps} steps; "
          f"Adam, peak lr {lr:.3g}" + (f" ({'--lr' if cfg.lr else 'sqrt-scaled to the batch'}), "
          f"{warmup_steps(total_steps)} warm-up steps, cosine to {FINAL_LR_FRACTION:g} x peak"
          if cfg.lr_schedule == "cosine" else ", constant"), flush=True)
    if cfg.backbone:
        print(f"--backbone {cfg.backbone}: encoder frozen for {cfg.backbone_frozen_steps} steps, then at "
              f"{cfg.backbone_lr_scale:g} x the lr; its BatchNorm {cfg.backbone_batchnorm}; decoder --width "
              f"{cfg.width:g}", flush=True)
    if cfg.distribute != "none":
        n = backend.replicas(cfg.distribute)
        print(f"--distribute {cfg.distribute}: {n} devices on {keras.backend.backend()}, a batch of "
              f"{cfg.batch_size} = {cfg.batch_size / n:g} figures per device", flush=True)


def check_inputs(cfg):
    """InputError (one line naming the flag) for the cheap mistakes, before any work; make_datasets
    and train() check what needs the data read (the split, joints, --resume against the run)."""
    check_out_dir(cfg.out)
    check_new_run(cfg)
    try:
        for flag, path in (("--data", cfg.data), ("--val-data", cfg.val_data)):
            if path:
                try:
                    FigureFile(path)  # validates the file, its length and its joints; reads nothing
                except (FileNotFoundError, ValueError) as err:
                    raise InputError(f"{flag} {err}") from None
        if cfg.backbone:
            if cfg.arch != "simple":
                raise InputError(f"--backbone {cfg.backbone} builds the simple network's decoder; "
                                 f"drop --arch {cfg.arch}")
            backbone_weights(cfg.backbone_weights)  # a missing file, or imagenet offline: one line, before any work
        if cfg.init_weights:
            try:
                load_trained_model(cfg.init_weights)
            except ValueError as err:
                raise InputError(f"--init-weights {err}") from None
        backend.check_distribute(cfg.distribute)
        if cfg.run_eagerly and cfg.distribute != "none":
            raise InputError(f"--run-eagerly is for one device; drop it or --distribute {cfg.distribute}")
    except (FileNotFoundError, ValueError) as err:
        raise InputError(str(err)) from None


def parse_args(argv=None):
    """Command-line flags -> argparse.Namespace; a usage mistake exits 2 with one line.

    With --config runs/NAME/config.json, the run's flags come first and the command line's
    own flags override them (--out must be given: a new folder for the new run)."""
    parser = build_parser("model.py", __doc__.split("\n\n")[0])
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
    if args.resume and args.overwrite:
        parser.error("--resume continues the run in --out, --overwrite deletes it: give one of them")
    if args.scale_min > args.scale_max:
        parser.error(f"--scale-min {args.scale_min:g} is above --scale-max {args.scale_max:g}")
    return args


def main(argv=None):
    """Train from the command line; every user mistake and broken input ends as one line and exit 1
    (usage mistakes: 2), and so does a run stopped at a non-finite loss. Ctrl-C and SIGTERM (a
    scheduler's preemption) end alike: one line, the backups kept, exit 130 / 143 (128 + signal).

    The exit comes after the except block: the exception's traceback holds the training's frames,
    and with them TensorFlow's dataset iterator, which would otherwise be finalised at interpreter
    shutdown with a warning line of its own."""
    args = parse_args(argv)
    cfg = config_from_args(args, terminal=sys.stdout.isatty())  # no progress bar in a log file
    try:
        with sigterm_interrupts() as received:
            check_inputs(cfg)
            if args.cpu_devices:
                backend.set_cpu_devices(args.cpu_devices)
            train(cfg, [StopOnSignal(received)])
            if received:  # landed where its exception was lost, after the last step
                raise Terminated(received[-1])
        return
    except (InputError, NonFiniteTraining) as err:
        message, status = f"model.py: error: {err}", None
    except OSError as err:  # e.g. a full disk mid-run: the backups written so far stay resumable
        message, status = f"model.py: error: {err}; continue with --resume once fixed", None
    except KeyboardInterrupt as err:
        signum = signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT
        message, status = f"model.py: interrupted ({signum.name}); continue with --resume", 128 + signum
    gc.collect()  # the interrupted run's objects, while the interpreter can still finalise them
    if status is None:
        sys.exit(message)  # exit status 1, the message on stderr
    print(message, file=sys.stderr, flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
