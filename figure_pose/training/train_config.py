"""A training run's settings: `TrainConfig`, the one place of each setting's default, --help text and type.

    cfg = TrainConfig(data="coco.npy", out="runs/x", epochs=3)          # in code
    cfg = config_from_args(build_parser("model.py", "...").parse_args(argv), terminal=True)   # from flags

Every field with a flag becomes `--field-name` (or the `flag` its metadata names) with that
default, help and argparse type or choices; the augmentation's fields (figure_dataset.Augment)
become flags of their own. config.json of a run is `asdict(TrainConfig)` (augment nested) and
`config_argv` turns one back into flags (--config). The few flags that are no setting of the
run (--config, --no-augment, --cpu-devices, --quiet) are added by `build_parser`.
"""
import argparse
import json
from dataclasses import dataclass, field, fields

from figure_pose.core.cli import HelpFormatter, OneLineParser, int_in, number
from figure_pose.core.confidence_maps import ARCH_CODECS
from figure_pose.data.figure_dataset import NO_AUGMENT, Augment
from figure_pose.training.network import BACKBONES
from figure_pose.training.run_folder import RUN_IDENTITY
from figure_pose.training.training import FINAL_LR_FRACTION, MIN_STEPS, REFERENCE_BATCH, REFERENCE_LR, WARMUP_STEPS


def input_size(text):
    """An argparse type for --size: 0 (the data's canvas size) or a multiple of 32 >= 32."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value != 0 and (value < 32 or value % 32):
        raise argparse.ArgumentTypeError(f"must be 0 or a multiple of 32 >= 32, not {text!r}")
    return value


def setting(default, help, type=None, choices=None, flag=None):  # noqa: A002 - argparse's names
    """A TrainConfig field: its default, and its flag's --help text and argparse type or choices.

    flag: the flag's name when it is not --field-name; False: no flag (set another way).
    A bool field is an on/off flag (store_true).
    """
    return field(default=default, metadata={"help": help, "type": type, "choices": choices, "flag": flag})


# --width's default by --backbone: the simple network's 0.5, and a wider decoder (2.8 M parameters
# in all) on the pretrained encoder, each the best measured on the real slice (docs/results.md).
DEFAULT_WIDTH = {None: 0.5, "mobilenet_v2": 1.0}


@dataclass
class TrainConfig:
    """Everything a training run depends on; model.py's flags are made from these fields."""
    data: str = setting("coco.npy", "training figures (coco.npy from coco_process.py)")
    out: str = setting("runs/default", "run folder for checkpoints, logs and pictures")
    val_data: str | None = setting(None, "validation figures (same joints and canvas size as --data); omitted: "
                                         "hold out 20% of --data's images")
    epochs: int = setting(50, "number of epochs (>= 1); on a small set each epoch is lengthened to reach "
                              "--min-steps", int_in(1))
    batch_size: int = setting(8, "global batch size (>= 1); the default --lr follows it", int_in(1))
    lr: float = setting(0.0, f"peak Adam learning rate (>= 0); 0: {REFERENCE_LR:g} x sqrt(batch / {REFERENCE_BATCH}) "
                             "(square-root scaling with the global batch: 1e-3 at 32, 2e-3 at 128)", number(0))
    lr_schedule: str = setting("cosine", f"cosine: linear warm-up over min({WARMUP_STEPS}, steps / 10) optimiser "
                                         f"steps, then cosine decay to {FINAL_LR_FRACTION:g} x the peak at the last "
                                         "step; constant: the peak throughout", choices=("constant", "cosine"))
    steps_per_epoch: int = setting(0, "batches per epoch (>= 0; 0: one full pass, or more to reach --min-steps)",
                                   int_in(0))
    min_steps: int = setting(MIN_STEPS, "optimiser steps the whole run takes at least (>= 0): when one pass over "
                                        "--data per epoch is fewer, every epoch takes ceil(min-steps / epochs) "
                                        "batches", int_in(0))
    arch: str = setting("simple", "simple: maps at stride 4; original: the original network, maps at full size",
                        choices=sorted(ARCH_CODECS))
    size: int = setting(128, "network input side in pixels (0: the data's canvas size, else a multiple of 32 >= "
                             "32); 128 learns from a few hundred figures on a CPU, 256 is the usual full-COCO input",
                        input_size)
    width: float | None = setting(None, "channel multiplier of the network (of the decoder alone with --backbone) "
                                        f"(> 0); default {DEFAULT_WIDTH[None]:g} (simple: 0.37 M parameters; 1: "
                                        f"1.47 M), {DEFAULT_WIDTH['mobilenet_v2']:g} with --backbone mobilenet_v2",
                                  number(0, above=True))
    depth: int = setting(1, "residual blocks per stage (>= 1; scales depth)", int_in(1))
    backbone: str | None = setting(None, "a pretrained encoder for the simple network's decoder: mobilenet_v2 "
                                         "(keras.applications' MobileNetV2, fine-tuned end to end; 2.8 M parameters "
                                         "at its default --width 1); the --backbone-* flags' defaults are the best measured on "
                                         "a few hundred real figures (docs/training.md, Transfer learning)",
                                   choices=BACKBONES)
    backbone_weights: str = setting("imagenet", "the --backbone's starting weights: imagenet (Keras downloads the "
                                                "official file once into ~/.keras/models), none (random), or the "
                                                "path of a MobileNetV2 .weights.h5 file")
    backbone_lr_scale: float = setting(0.1, "the --backbone encoder's learning rate as a fraction of --lr (0-1; the "
                                            "decoder's is --lr)", number(0, 1))
    backbone_frozen_steps: int = setting(300, "the --backbone encoder stays frozen for this many optimiser steps "
                                              "(>= 0) while the new decoder warms up, then learns at "
                                              "--backbone-lr-scale",
                                         int_in(0))
    backbone_batchnorm: str = setting("frozen", "the --backbone encoder's BatchNorm: frozen (its ImageNet "
                                                "statistics and scales, inference mode) or train (batch statistics)",
                                      choices=("frozen", "train"))
    init_weights: str | None = setting(None, "fine-tuning: start from the weights of a model.py .keras file of the "
                                             "same --arch, --size, --width and --depth (e.g. one trained on the "
                                             "synthetic sample); the schedule starts at step 0")
    loss: str = setting("fg_mse", "fg_mse: the original's per-joint MSE with foreground pixels weighted x10 "
                                  "(default); mse: the original's plain loss, which collapses to all-background "
                                  "maps on short schedules (val PCK@0.1 0.01 vs 0.93 after the 8-epoch sample run)",
                        choices=("mse", "fg_mse"))
    augment: Augment = setting(Augment(), "one flag per Augment field; --no-augment: NO_AUGMENT", flag=False)
    seed: int = setting(0, "random seed (>= 0: weights, split, order, augmentation)", int_in(0))
    resume: bool = setting(False, "continue the run in --out from its newest complete backup (backup/; a broken "
                                  "newest one is skipped for the one before). Refused when --out has no config.json "
                                  "(no run there), or when a flag that changes the model or the data differs from "
                                  f"the run's ({', '.join('--' + k.replace('_', '-') for k in RUN_IDENTITY)}); "
                                  "others, e.g. --epochs to train longer, may change. With no backup yet (killed "
                                  "in its first epoch) it starts at epoch 0, with a note. Like every run, refused while "
                                  "another model.py process trains in --out")
    overwrite: bool = setting(False, "start afresh in an --out that holds a run (its config.json, log.csv, "
                                     "backup/ or a .keras), deleting that run's checkpoints, log, backups and "
                                     "pictures; without it (or --resume) such an --out is refused")
    mixed_precision: bool = setting(False, "float16 (GPU) / bfloat16 (CPU) compute")
    run_eagerly: bool = setting(False, "debugging: run each training step op by op in Python (Keras' run_eagerly), "
                                       "so a breakpoint or print in the step works; no graph is traced, so a run of "
                                       "a few steps starts sooner, but every step is slower (not with --distribute)")
    distribute: str = setting("none", "mirrored: all GPUs of this machine (tf.distribute, or DataParallel on JAX); "
                                      "multiworker: several machines, JAX backend only, every process started with "
                                      "KERAS_DISTRIBUTION_JOB_ADDRESSES/_NUM_PROCESSES/_PROCESS_ID (see docs/training.md)",
                              choices=("none", "mirrored", "multiworker"))
    workers: int = setting(2, "threads (or processes, with --worker-processes) that read batches (>= 1); the "
                              "device does the augmentation, so 2 keep a GPU fed on most machines", int_in(1))
    processes: bool = setting(False, "read batches in worker processes instead of threads", flag="--worker-processes")
    verbose: int = setting(1, "Keras' fit verbosity: 1 a progress bar, 2 a line per epoch (--quiet, or no terminal)",
                           flag=False)

    def __post_init__(self):
        if self.width is None:  # the network's own default; config.json records the width used
            self.width = DEFAULT_WIDTH.get(self.backbone, DEFAULT_WIDTH[None])


def flag_of(name: str) -> str:
    """The flag of a TrainConfig or Augment field name (--worker-processes for processes)."""
    for f in fields(TrainConfig):
        if f.name == name and f.metadata["flag"]:
            return f.metadata["flag"]
    return "--" + name.replace("_", "-")


def add_flag(parser, f):
    """The flag of dataclass field `f`, from its default and metadata ('%' escaped for argparse)."""
    help_text = f.metadata["help"].replace("%", "%%")
    name = flag_of(f.name)
    if isinstance(f.default, bool):
        parser.add_argument(name, action="store_true", help=help_text)
    else:
        parser.add_argument(name, default=f.default, type=f.metadata.get("type"),
                            choices=f.metadata.get("choices"), help=help_text)


def build_parser(prog: str, description: str):
    """The command line of a training run: one flag per TrainConfig and Augment field, plus --config,
    --no-augment, --cpu-devices and --quiet. Numbers are checked against their ranges at parse time."""
    p = OneLineParser(prog=prog, description=description, formatter_class=HelpFormatter)
    p.add_argument("--config", metavar="runs/NAME/config.json",
                   help="start from the flags of an earlier run (its config.json); flags given as well "
                        "override them; needs --out (a new folder); on/off flags it sets cannot be turned off")
    for f in fields(TrainConfig):
        if f.name == "augment":
            for augment_field in fields(Augment):
                add_flag(p, augment_field)
            p.add_argument("--no-augment", action="store_true", help="turn all augmentation off")
        elif f.metadata["flag"] is not False:
            add_flag(p, f)
    p.add_argument("--cpu-devices", type=int_in(0), default=0,
                   help="split the CPU into N logical devices (>= 0; testing)")
    p.add_argument("--quiet", action="store_true",
                   help="no per-batch progress bar (also off when stdout is not a terminal, e.g. a log file): "
                        "Keras' line per epoch, then one with its time, the elapsed time and the run's ETA")
    return p


def dest_of(name: str) -> str:
    """The argparse attribute of a field's flag (worker_processes for processes)."""
    return flag_of(name)[2:].replace("-", "_")


def config_from_args(args, terminal: bool) -> TrainConfig:
    """The TrainConfig of parsed flags. verbose 1 (Keras' progress bar) only on a terminal without
    --quiet, else 2 (a line per epoch: no bar in a log file)."""
    values = {f.name: getattr(args, dest_of(f.name)) for f in fields(TrainConfig) if f.metadata["flag"] is not False}
    augment = NO_AUGMENT if args.no_augment else Augment(**{f.name: getattr(args, f.name) for f in fields(Augment)})
    return TrainConfig(**values, augment=augment, verbose=2 if args.quiet or not terminal else 1)


# config.json keys that are no flag: the data's facts (checked by --resume), the run's own folder,
# --resume and --overwrite (a reproduction starts afresh in a new --out).
CONFIG_NOT_FLAGS = ("joints", "input_size", "out", "resume", "overwrite")


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
        if key == "verbose":
            flags += ["--quiet"] if value == 2 else []
        elif isinstance(value, bool):
            flags += [flag_of(key)] if value else []
        else:
            flags += [flag_of(key), str(value)]
    return flags
