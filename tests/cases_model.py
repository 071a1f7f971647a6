"""model.py's rows of the bad-input table (tests/test_bad_inputs.py) and the files they name.

Every row but one fails before any training starts (so the rows are quick) and leaves no --out
behind; the one that trains (--lr 1e6) stops at its first NaN loss and leaves no checkpoint.
A refused run into the run folder {run} leaves it exactly as it was (`check_after`).
"""
import os
from pathlib import Path

from bad_input_table import Case, write
from test_figure_dataset import write_figures

from synthetic_coco import random_figures_file

import figure_pose.training.network as N
from figure_pose.training.train_config import TrainConfig

import model as M

OUT = "out"  # the name of {out} in each row's folder
MD = "model"
TINY = ["--size", "64", "--width", "0.25", "--batch-size", "4", "--steps-per-epoch", "2", "--epochs", "1", "--quiet"]
RUN = ["--data", "{data}", *TINY, "--out", "{out}"]            # a good run; rows add one mistake
RESUME = ["--data", "{data}", *TINY, "--seed", "1", "--out", "{run}", "--resume"]  # {run}'s own flags

CASES = [
    # numeric flags: checked at parse time (exit 2), with the valid range in the message
    Case("epochs 0", MD, RUN + ["--epochs", "0"], 2, r"argument --epochs: must be an integer >= 1, not '0'"),
    Case("epochs not a number", MD, RUN + ["--epochs", "ten"], 2, r"argument --epochs: must be an integer >= 1"),
    Case("batch-size 0", MD, RUN + ["--batch-size", "0"], 2, r"argument --batch-size: must be an integer >= 1"),
    Case("lr negative", MD, RUN + ["--lr=-0.001"], 2, r"argument --lr: must be a finite number >= 0, not '-0.001'"),
    Case("lr nan", MD, RUN + ["--lr", "nan"], 2, r"argument --lr: must be a finite number >= 0"),
    Case("min-steps negative", MD, RUN + ["--min-steps=-1"], 2, r"argument --min-steps: must be an integer >= 0"),
    Case("size not a multiple of 32", MD, RUN + ["--size", "48"], 2,
         r"argument --size: must be 0 or a multiple of 32 >= 32, not '48'"),
    Case("size negative", MD, RUN + ["--size=-32"], 2, r"argument --size: must be 0 or a multiple of 32"),
    Case("width 0", MD, RUN + ["--width", "0"], 2, r"argument --width: must be a finite number > 0"),
    Case("width inf", MD, RUN + ["--width", "inf"], 2, r"argument --width: must be a finite number > 0"),
    Case("depth 0", MD, RUN + ["--depth", "0"], 2, r"argument --depth: must be an integer >= 1"),
    Case("flip above 1", MD, RUN + ["--flip", "1.5"], 2, r"argument --flip: must be a finite number in \[0, 1\]"),
    Case("scale-min above scale-max", MD, RUN + ["--scale-min", "1.5", "--scale-max", "1.25"], 2,
         r"--scale-min 1.5 is above --scale-max 1.25"),
    Case("scale-min 0", MD, RUN + ["--scale-min", "0"], 2, r"argument --scale-min: must be a finite number > 0"),
    Case("rotation negative", MD, RUN + ["--rotation=-5"], 2, r"argument --rotation: must be a finite number >= 0"),
    Case("shift negative", MD, RUN + ["--shift=-0.1"], 2, r"argument --shift: must be a finite number >= 0"),
    Case("color-jitter negative", MD, RUN + ["--color-jitter=-1"], 2, r"argument --color-jitter: must be a finite number >= 0"),
    Case("workers 0", MD, RUN + ["--workers", "0"], 2, r"argument --workers: must be an integer >= 1"),
    Case("steps-per-epoch negative", MD, RUN + ["--steps-per-epoch=-1"], 2,
         r"argument --steps-per-epoch: must be an integer >= 0"),
    Case("seed negative", MD, RUN + ["--seed=-1"], 2, r"argument --seed: must be an integer >= 0"),
    Case("cpu-devices negative", MD, RUN + ["--cpu-devices=-1"], 2, r"argument --cpu-devices: must be an integer >= 0"),
    Case("unknown backbone", MD, RUN + ["--backbone", "vgg"], 2, r"argument --backbone: invalid choice"),
    Case("backbone-lr-scale above 1", MD, RUN + ["--backbone-lr-scale", "2"], 2,
         r"argument --backbone-lr-scale: must be a finite number in \[0, 1\]"),
    Case("backbone weights missing", MD, RUN + ["--backbone", "mobilenet_v2", "--backbone-weights", "{tmp}/no.h5"], 1,
         r"--backbone-weights .*no.h5: no such file \(imagenet, none or a MobileNetV2 .weights.h5 file\)"),
    Case("backbone with the original arch", MD, RUN + ["--backbone", "mobilenet_v2", "--arch", "original"], 1,
         r"--backbone mobilenet_v2 builds the simple network's decoder; drop --arch original"),
    # --data / --val-data / --init-weights
    Case("data missing", MD, ["--data", "{tmp}/none.npy", *TINY, "--out", "{out}"], 1,
         r"--data .*none\.npy not found"),
    Case("data is text", MD, ["--data", "{notes_npy}", *TINY, "--out", "{out}"], 1,
         r"--data .*notes\.npy is not a figure file"),
    Case("data truncated", MD, ["--data", "{truncated_npy}", *TINY, "--out", "{out}"], 1,
         r"--data .*truncated\.npy is (truncated|not a figure file)"),
    Case("data of one image: no validation split", MD, ["--data", "{one_image}", *TINY, "--out", "{out}"], 1,
         r"--data .*one_image\.npy: its figures come from one image.*--val-data"),
    Case("data of canvases no multiple of 32", MD, ["--data", "{data100}", *TINY, "--size", "0", "--out", "{out}"], 1,
         r"--data .*data100\.npy has 100x100 canvases; .*give --size"),
    Case("val-data of other joints", MD, RUN + ["--val-data", "{data17}"], 1,
         r"--val-data .*data17\.npy has 17 joints, --data .*data\.npy 13"),
    Case("val-data of another canvas size", MD, RUN + ["--val-data", "{data96}"], 1,
         r"--val-data .*data96\.npy has 96x96 canvases, --data .*data\.npy 64x64"),
    Case("init-weights of another architecture", MD, RUN + ["--init-weights", "{wide_keras}"], 1,
         r"--init-weights .*wide\.keras has another architecture than --arch/--width/--depth/--size"),
    Case("init-weights is text", MD, RUN + ["--init-weights", "{notes_keras}"], 1,
         r"--init-weights .*notes\.keras is not a figure-pose model"),
    Case("run-eagerly with distribute", MD, RUN + ["--run-eagerly", "--distribute", "mirrored"], 1,
         r"--run-eagerly is for one device; drop it or --distribute mirrored"),
    # --out
    Case("out is a file", MD, ["--data", "{data}", *TINY, "--out", "{a_file}"], 1, r"--out .*a_file is a file", ()),
    Case("out under a file", MD, ["--data", "{data}", *TINY, "--out", "{a_file}/run"], 1,
         r"--out .*a_file/run: .*a_file is a file", ()),
    Case("out cannot be created", MD, ["--data", "{data}", *TINY, "--out", "/proc/no/run"], 1,
         r"cannot create --out /proc/no/run", ("/proc/no/run",)),
    Case("out holds a run", MD, RUN[:-1] + ["{run}"], 1,
         r"--out .*run holds a run \(backup, best\.keras, config\.json, last\.keras, log\.csv\): continue it with "
         r"--resume, start afresh there with --overwrite \(deletes it\), or give another --out", ()),
    Case("resume and overwrite", MD, RESUME + ["--overwrite"], 2,
         r"--resume continues the run in --out, --overwrite deletes it: give one of them", ()),
    # a run that diverges
    Case("lr 1e6: NaN loss", MD, RUN + ["--lr", "1e6", "--run-eagerly"], 1,
         r"the training loss became nan in epoch 1/1, step \d/2; training stopped, nothing saved: no epoch had "
         r"finished\. Likely causes: a learning rate too high \(peak lr 1e\+06\), float16 overflow "
         r"\(--mixed-precision\) or bad data; continue with --resume and a lower --lr",
         ("{out}/best.keras", "{out}/last.keras", "{out}/backup")),
    # --resume
    Case("resume: no such run", MD, RESUME[:-3] + ["--out", "{out}", "--resume"], 1,
         r"--resume: .*out holds no run to resume \(no config\.json\)"),
    Case("resume: folder without config.json", MD, RESUME[:-3] + ["--out", "{empty_folder}", "--resume"], 1,
         r"--resume: .*empty_folder holds no run to resume", ()),
    Case("resume: config.json not JSON", MD, RESUME[:-3] + ["--out", "{broken_run}", "--resume"], 1,
         r"--resume: cannot read .*broken_run/config\.json", ()),
    Case("resume with another arch", MD, RESUME + ["--arch", "original"], 1,
         r"--resume: .*--arch original \(the run has simple\)", ()),
    Case("resume with another size", MD, RESUME + ["--size", "96"], 1, r"--resume: .*--size 96 \(the run has 64\)", ()),
    Case("resume with another width and depth", MD, RESUME + ["--width", "0.5", "--depth", "2"], 1,
         r"--resume: .*--width 0\.5 \(the run has 0\.25\).*--depth 2 \(the run has 1\)", ()),
    Case("resume with other data", MD, RESUME + ["--data", "{data17}"], 1,
         r"--resume: .*--data .*data17\.npy \(the run has .*data\.npy\).*17 joints in --data \(the run has 13\)", ()),
    Case("resume with another loss", MD, RESUME + ["--loss", "mse"], 1, r"--resume: .*--loss mse \(the run has fg_mse\)", ()),
    Case("resume with another seed", MD, RESUME + ["--seed", "2"], 1, r"--resume: .*--seed 2 \(the run has 1\)", ()),
]


def build_inputs(tmp):
    """Every file the rows name, made once: {placeholder: path}. {run} is a real 1-epoch run."""
    paths = {"data": write_figures(tmp / "data.npy", n=16, size=64),
             "one_image": write_figures(tmp / "one_image.npy", n=2, size=64),
             "data17": random_figures_file(tmp / "data17.npy", n=16, size=64, n_joints=17),
             "data96": write_figures(tmp / "data96.npy", n=16, size=96),
             "data100": write_figures(tmp / "data100.npy", n=16, size=100)}
    paths["truncated_npy"] = tmp / "truncated.npy"
    paths["truncated_npy"].write_bytes(open(paths["data"], "rb").read()[:50_000])
    paths["notes_npy"] = write(tmp / "notes.npy", "not figures\n")
    paths["notes_keras"] = write(tmp / "notes.keras", "not a model\n")
    paths["a_file"] = write(tmp / "a_file", "x\n")
    paths["empty_folder"] = tmp / "empty_folder"
    paths["empty_folder"].mkdir()
    paths["broken_run"] = tmp / "broken_run"
    write(paths["broken_run"] / "config.json", "{oops")
    paths["wide_keras"] = tmp / "wide.keras"
    N.build_model("simple", n_joints=13, size=64, width=0.5).save(paths["wide_keras"])
    paths["run"] = tmp / "run"
    M.train(TrainConfig(data=str(paths["data"]), out=str(paths["run"]), epochs=1, batch_size=4, size=64, width=0.25,
                        seed=1, steps_per_epoch=2, verbose=0, run_eagerly=True))
    run_files = files_of(paths["run"])
    return {**{k: str(v) for k, v in paths.items()}, "run_files": run_files}


def files_of(folder):
    """{name: (size, mtime)} of a folder's files: what a refused --resume must not change."""
    return {name: (os.path.getsize(folder / name), os.path.getmtime(folder / name)) for name in os.listdir(folder)}


def check_after(case, argv, stdout, inputs):
    assert files_of(Path(inputs["run"])) == inputs["run_files"], "a refused --resume changed the run folder"
