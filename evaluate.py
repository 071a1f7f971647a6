"""Evaluate a figure-pose model (or the stored ground truth) on figures; run it on new images.

    python evaluate.py --model runs/NAME/best.keras --data coco_val.npy \
        --coco-root DIR --split val2017 --out runs/NAME/eval
    python evaluate.py --run runs/NAME            # best.keras on the run's validation images
    python evaluate.py --oracle --data coco_val.npy --coco-root DIR --out eval_oracle
    python evaluate.py --model M --images photo.jpg drawings/ --out DIR [--bbox x,y,w,h | --annotations F]
    python evaluate.py --model M --export tflite|saved_model --out DIR

--model M is a .keras file of model.py or an export of one (export/model.tflite,
export/saved_model, or export/ itself; inference.py reads it with its export.json).

Evaluation writes into --out: metrics.json (PCK@0.05/0.1/0.2 overall and per joint, mean
and median joint error in original-image pixels, mean OKS, COCO keypoint AP/AR from
pycocotools over the joints the model predicts, the mean-pose baseline, counts),
keypoints_<split>_results.json (official COCO results format, 17 keypoints, original
pixels), examples.png and worst.png (input | target | prediction grids) and
pck_per_joint.png.

Predictions are decoded on the figure canvas (confidence_maps.decode_keypoints) and
mapped back to the photo with figures.invert_affine of the record's stored affine.
`--oracle` scores the stored ground-truth maps instead of a model: it must reach AP and
PCK@0.05 of about 1, which proves that the crop geometry, the map rendering, the decoder
and the inverse transform agree with pycocotools.

This file is the command line only. The work, in figure_pose/evaluation/: evaluation.py (the
evaluation run, run folders, the table), coco_eval.py (COCO formats, AP/AR, OKS), inference.py
(models, exports, the oracle, decoding), photos.py (--images); and figure_pose/core/pictures.py
(the pictures).
"""
import argparse
import math
import os
import sys

from figure_pose.core.cli import HelpFormatter, InputError, OneLineParser, check_out_dir, int_in, number, split_name
from figure_pose.evaluation.evaluation import (apply_run, load_figures_checked,  # run_sample.sh uses print_table
                                               print_table, run_evaluation)
from figure_pose.evaluation.inference import REFINES, export_model, load_model_checked
from figure_pose.evaluation.photos import list_images, load_box_annotations, run_inference


def parse_bbox(text):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(map(math.isfinite, values)) or values[2] <= 0 or values[3] <= 0:
        raise argparse.ArgumentTypeError(f"must be x,y,w,h (finite numbers, w, h > 0), not {text!r}")
    return values


def parse_ids(text):
    try:
        ids = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        ids = []
    if not ids:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers (at least one), not {text!r}")
    return ids


def build_parser():
    parser = OneLineParser(
        prog="evaluate.py",
        description="Evaluate a figure-pose model (or, with --oracle, the stored ground-truth maps) on a "
                    "coco.npy: PCK, errors in original pixels, COCO keypoint AP/AR (pycocotools), the "
                    "mean-pose baseline and pictures; or predict joints on new images (--images); or "
                    "export the model (--export).",
        formatter_class=HelpFormatter)
    add_what_arguments(parser.add_argument_group("what to run"))
    add_evaluation_arguments(parser.add_argument_group("evaluation"))
    add_decoding_arguments(parser.add_argument_group("decoding (evaluation and --images)"))
    add_image_arguments(parser.add_argument_group("inference on images (--images)"))
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def add_what_arguments(what):
    what.add_argument("--model", help="trained model: a .keras file written by model.py, or an export of one "
                                       "(model.tflite or saved_model/ with the export.json beside it, or the "
                                       "--export folder itself)")
    what.add_argument("--oracle", action="store_true",
                      help="evaluate the ground-truth maps stored in --data instead of a model (no --model): "
                           "checks geometry, rendering, decoding and the inverse transform")
    what.add_argument("--data", help="figures to evaluate (coco.npy from coco_process.py, e.g. coco_val.npy)")
    what.add_argument("--images", nargs="+", metavar="PATH",
                      help="predict on these image files or folders (not recursive) instead of evaluating: one "
                           "figure per image, or one per box of --annotations")
    what.add_argument("--export", choices=("tflite", "saved_model"),
                      help="write a deployable copy of --model into --out instead of evaluating")
    what.add_argument("--run", metavar="runs/NAME",
                      help="evaluate a model.py run folder: its best.keras on its validation figures (the "
                           "held-out images of --data when it trained without --val-data, from split.json), "
                           "its training data for the baseline, into runs/NAME/eval; flags given as well win")
    what.add_argument("--out", help="output folder (created if missing; required, except with --run: "
                                    "runs/NAME/eval)")


def add_evaluation_arguments(ev):
    ev.add_argument("--coco-root", help="COCO folder with annotations/person_keypoints_<split>.json, for AP/AR "
                                        "against the original annotations (without it: AP/AR approximate, "
                                        "from the figures with bbox area)")
    ev.add_argument("--split", type=split_name,
                    help="COCO split of --data, e.g. val2017 (default: from the coco.npy sidecar, else val2017)")
    ev.add_argument("--train-data", help="training coco.npy, for the mean-pose baseline (default: the "
                                         "evaluated figures themselves, labelled so)")
    ev.add_argument("--limit", type=int_in(1), metavar="N",
                    help="evaluate only the first N selected figures (N >= 1)")
    ev.add_argument("--image-ids", type=parse_ids, metavar="A,B,C",
                    help="evaluate only figures of these COCO image ids (at least one)")
    ev.add_argument("--compare-decoding", action="store_true",
                    help="also score every --refine with and without --flip-test (metrics.json "
                         "decoding_comparison)")
    ev.add_argument("--pictures", type=int_in(0), default=8, metavar="N",
                    help="figures in examples.png (the first ones) and in worst.png (largest error); "
                         "N >= 0, 0: none")


def add_decoding_arguments(dec):
    dec.add_argument("--refine", choices=REFINES, default="dark",
                     help="sub-pixel refinement of the map peak: dark (Taylor step on the smoothed log map), "
                          "quarter (1/4 px towards the higher neighbour) or none (integer argmax)")
    dec.add_argument("--flip-test", action=argparse.BooleanOptionalAction, default=True,
                     help="average the maps of each figure and of its mirror image (un-flipped, left/right "
                          "swapped); on by default (it raises AP on the sample model: docs/results.md)")
    dec.add_argument("--batch-size", type=int_in(1), default=16, metavar="N",
                     help="figures per model call (N >= 1)")


def add_image_arguments(inf):
    inf.add_argument("--bbox", type=parse_bbox, metavar="X,Y,W,H",
                     help="the figure's box in every image (original pixels; w, h > 0; images it does not "
                          "overlap are skipped); default: the whole image is the figure")
    inf.add_argument("--annotations", metavar="FILE",
                     help="the figures' boxes per image file name: COCO-format JSON (bbox, optional "
                          "segmentation mask), a CSV of file,x,y,w,h rows (header optional) or a JSON list of "
                          "{file, x, y, w, h}; several boxes per file: several figures; images without one use "
                          "the whole image")
    inf.add_argument("--min-confidence", type=number(0, 1), default=0.2, metavar="C",
                     help="joints below this confidence (0 <= C <= 1) are not drawn on the overlays (all are "
                          "written). A confidence is the joint's map peak: about 1 for a clear joint, near 0 "
                          "where the model sees none; not a calibrated probability")
    inf.add_argument("--overwrite", action="store_true",
                     help="replace the predictions.json (and overlays of the same names) of an earlier run in "
                          "--out; without it such an --out is refused")


def check_args(parser, args):
    if not args.out:
        parser.error("give --out (the output folder)")
    if args.images and args.export:
        parser.error("choose one of --images and --export")
    if args.oracle and args.model:
        parser.error("--oracle evaluates the stored maps: give no --model")
    if (args.images or args.export) and not args.model:
        parser.error("--images and --export need --model")
    if not args.images and not args.export:
        if not args.data:
            parser.error("give --data to evaluate (or --images / --export)")
        if not args.model and not args.oracle:
            parser.error("give --model or --oracle")
    if args.bbox and args.annotations:
        parser.error("give --bbox or --annotations, not both")
    evaluation_only = [flag for flag, value in (
        ("--data", args.data), ("--coco-root", args.coco_root), ("--split", args.split),
        ("--train-data", args.train_data), ("--limit", args.limit), ("--image-ids", args.image_ids),
        ("--compare-decoding", args.compare_decoding)) if value]
    if (args.images or args.export) and evaluation_only:
        parser.error(f"{', '.join(evaluation_only)}: only for evaluation, not with --images or --export")
    if args.overwrite and not args.images:
        parser.error("--overwrite is for --images (predictions.json)")
    if (args.bbox or args.annotations) and not args.images:
        parser.error("--bbox and --annotations crop the --images: give --images")


def check_inputs(args):
    """The cheap checks, before TensorFlow loads: --out, then the --images and --annotations, or
    the --data and --train-data. Returns the --annotations boxes (None without)."""
    check_out_dir(args.out)
    if args.images:
        earlier = os.path.join(args.out, "predictions.json")
        if os.path.exists(earlier) and not args.overwrite:
            raise InputError(f"--out {args.out} holds the predictions.json of an earlier run: give a new "
                             "--out, or --overwrite to replace it")
        list_images(args.images)
        return load_box_annotations(args.annotations) if args.annotations else None
    if not args.export:
        load_figures_checked(args.data)
        if args.train_data:
            load_figures_checked(args.train_data, "--train-data")
    return None


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.run and (args.images or args.export or args.oracle):
        parser.error("--run evaluates a run folder: not with --images, --export or --oracle")
    try:
        run_split = apply_run(args) if args.run else None
    except InputError as err:
        sys.exit(f"evaluate.py: error: {err}")
    check_args(parser, args)
    args.run_split = run_split
    try:
        boxes = check_inputs(args)
        model, predict = load_model_checked(args.model) if args.model else (None, None)
        if args.export:
            if getattr(model, "format", None):
                raise InputError(f"--model {args.model} is an export already: --export copies a .keras model")
            path = export_model(model, args.export, args.out)
            print(f"exported {args.model} -> {path}")
        elif args.images:
            run_inference(args, model, predict, boxes)
        else:
            metrics = run_evaluation(args, model, predict)
            print_table(metrics)
            print(f"wrote {args.out}/metrics.json, keypoints_{metrics['split']}_results.json and pictures")
    except InputError as err:
        sys.exit(f"evaluate.py: error: {err}")
    except KeyboardInterrupt:
        sys.exit("evaluate.py: interrupted")


if __name__ == "__main__":
    main()
