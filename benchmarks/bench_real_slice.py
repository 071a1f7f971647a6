"""Cross-validated accuracy on a small real COCO slice: the network vs the mean-pose baseline.

    python coco_process.py --coco-root ../shared/data/coco-sample --out /tmp/real.npy \\
        --min-keypoints 1 --allow-multi-polygon --examples 0
    python benchmarks/bench_real_slice.py --data /tmp/real.npy --out /tmp/real_cv \\
        --coco-root ../shared/data/coco-sample          # model.py's defaults
    python benchmarks/bench_real_slice.py --data /tmp/real.npy --out /tmp/real_cv_small \\
        --coco-root ../shared/data/coco-sample -- --size 128 --width 0.5   # any model.py flags after --

Why k-fold: a slice of 130 images holds out only a handful of figures per split, so one
split's PCK moves by several points with the seed. Here the *images* are cut into --folds
groups; each fold trains `model.py` on the figures of the other images and scores its
last checkpoint with `evaluate.py` on the figures of its own images that have at least
--val-min-keypoints labelled joints. The mean-pose baseline of every fold comes from that
fold's training figures. Pooled PCK weights every labelled validation joint equally;
pooled AP is one COCOeval over all folds' predictions against the original annotations
(--coco-root; without it, each fold's approximate AP from the figures, averaged). The joints
missed at PCK@0.2 are counted by kind over all folds: left/right inversions, and labels on
the white canvas, outside the cut-out (evaluate.py's miss line).
--train-fraction F trains each fold on a seeded F of its training images alone (the same
validation figures; the fractions nest: 0.25's images are among 0.5's): a learning curve,
accuracy against the number of labelled figures. Arguments after `--` go to model.py
unchanged. --reuse scores folds trained before again (e.g. with --coco-root) without
training them.
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from figure_pose.core.figures import figure_joint_names, open_figures, read_sidecar  # noqa: E402
from figure_pose.evaluation.evaluation import MISS_THRESHOLD, describe_misses  # noqa: E402


def shuffled_images(image_ids, seed):
    """The distinct image ids in a seeded random order."""
    return np.random.default_rng(seed).permutation(np.unique(image_ids))


def image_folds(image_ids, folds, seed):
    """List of `folds` disjoint arrays of image ids (a seeded shuffle of the distinct ids)."""
    return np.array_split(shuffled_images(image_ids, seed), folds)


def training_images(image_ids, fraction, seed):
    """(N,) bool: the figures of the first round(fraction x images) of a seeded shuffle of the
    distinct image_ids (at least one image). One shuffle per seed, so smaller fractions keep a
    subset of larger ones' images."""
    unique = shuffled_images(image_ids, seed)
    return np.isin(image_ids, unique[:max(1, int(round(fraction * len(unique))))])


def write_subset(figures, indices, path, sidecar):
    """Save figures[indices] as a coco.npy of its own, with the source's sidecar JSON naming the
    new file's size (and no checksum of the source's), so that evaluate.py reads it."""
    np.save(path, np.ascontiguousarray(figures[indices]))
    sidecar = {k: v for k, v in sidecar.items() if k != "data_crc32"}
    with open(path + ".json", "w") as f:
        json.dump({**sidecar, "figures": int(len(indices)), "data_bytes": os.path.getsize(path)}, f)


def run(cmd, log_path):
    """Run a script of this repository, its output into log_path; exit with the log tail on failure."""
    with open(log_path, "w") as log:
        done = subprocess.run([sys.executable, *cmd], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"{' '.join(cmd[:1])} failed ({log_path}):\n" + open(log_path).read()[-2000:])


def run_fold(args, figures, sidecar, val_images, fold):
    """Train and evaluate one fold; returns evaluate.py's metrics dict."""
    out = os.path.join(args.out, f"fold{fold}")
    os.makedirs(out, exist_ok=True)
    in_val = np.isin(figures["image_id"], val_images)
    labelled = (np.asarray(figures["keypoints"][..., 2]) > 0).sum(axis=1)
    train_idx = np.flatnonzero(~in_val)
    if args.train_fraction < 1:
        train_idx = train_idx[training_images(figures["image_id"][train_idx], args.train_fraction,
                                              args.seed + 1000 * (fold + 1))]
    val_idx = np.flatnonzero(in_val & (labelled >= args.val_min_keypoints))
    train_path, val_path = os.path.join(out, "train.npy"), os.path.join(out, "val.npy")
    write_subset(figures, train_idx, train_path, sidecar)
    write_subset(figures, val_idx, val_path, sidecar)
    started = time.time()
    checkpoint = os.path.join(out, "run", args.checkpoint)
    if not (args.reuse and os.path.exists(checkpoint)):
        run(["model.py", "--data", train_path, "--val-data", val_path, "--out", os.path.join(out, "run"),
             "--overwrite", "--seed", str(args.seed), "--quiet", *args.model_args],  # a fold of an earlier --out
            os.path.join(out, "train.log"))
    seconds = time.time() - started
    gt = ["--coco-root", args.coco_root, "--split", args.split] if args.coco_root else []
    run(["evaluate.py", "--model", checkpoint, "--data", val_path, "--train-data", train_path,
         "--out", os.path.join(out, "eval"), "--pictures", "8", "--compare-decoding", "--quiet", *gt],
        os.path.join(out, "evaluate.log"))
    with open(os.path.join(out, "eval", "metrics.json")) as f:
        metrics = json.load(f)
    metrics["train_figures"] = int(len(train_idx))
    metrics["train_seconds"] = round(seconds)
    metrics["annotation_ids"] = [int(a) for a in figures["annotation_id"][val_idx]]
    with open(os.path.join(out, "eval", f"keypoints_{metrics['split']}_results.json")) as f:
        metrics["results"] = json.load(f)
    return metrics


def pooled_ap(rows, args, names):
    """COCO AP over all folds' predictions at once against the original annotations (--coco-root),
    else the mean of the folds' approximate APs (ground truth rebuilt from the figures)."""
    if not args.coco_root:
        return float(np.mean([r["ap"] for r in rows])), float(np.mean([r["baseline"]["ap"] for r in rows]))
    from figure_pose.evaluation import coco_eval
    annotations = coco_eval.load_annotations(args.coco_root, args.split)
    gt = coco_eval.gt_dataset_from_annotations(annotations, sum((r["annotation_ids"] for r in rows), []), names)
    return coco_eval.coco_keypoint_eval(gt, sum((r["results"] for r in rows), []), names)[0]["ap"], None


def pooled(rows, key, baseline=False):
    """PCK over all folds' labelled joints (each fold weighted by its labelled joints)."""
    weights = np.array([r["labelled_joints"] for r in rows], float)
    values = np.array([(r["baseline"] if baseline else r)[key] for r in rows], float)
    return float((weights * values).sum() / weights.sum())


def decoding_table(rows):
    """{variant: pooled PCK@0.1/0.2 and the folds' mean AP} of every decoding evaluate.py compared."""
    table = {}
    for variant in rows[0].get("decoding_comparison", {}):
        scored = [{**r["decoding_comparison"][variant], "labelled_joints": r["labelled_joints"]} for r in rows]
        table[variant] = {**{k: pooled(scored, k) for k in ("pck@0.1", "pck@0.2")},
                          "fold_mean_ap": float(np.mean([s["ap"] for s in scored]))}
        print(f"decoding {variant:>13}: PCK@0.1 {table[variant]['pck@0.1']:.3f}  PCK@0.2 "
              f"{table[variant]['pck@0.2']:.3f}  AP {table[variant]['fold_mean_ap']:.3f} (mean of folds)")
    return table


def report(rows, seconds, ap):
    """Print per-fold and pooled PCK of the network and of the mean pose; returns the pooled dict."""
    print(f"\n{'fold':>4} {'train':>6} {'val':>4} {'joints':>6} | {'PCK@0.1':>7} {'PCK@0.2':>7} | "
          f"{'mean pose @0.1':>14} {'@0.2':>6}")
    for i, r in enumerate(rows):
        b = r["baseline"]
        print(f"{i:4d} {r['train_figures']:6d} {r['figures']:4d} {r['labelled_joints']:6d} | "
              f"{r['pck@0.1']:7.3f} {r['pck@0.2']:7.3f} | {b['pck@0.1']:14.3f} {b['pck@0.2']:6.3f}")
    summary = {k: pooled(rows, k) for k in ("pck@0.05", "pck@0.1", "pck@0.2")}
    summary.update({f"mean_pose_{k}": pooled(rows, k, True) for k in ("pck@0.05", "pck@0.1", "pck@0.2")})
    summary.update(figures=sum(r["figures"] for r in rows), labelled_joints=sum(r["labelled_joints"] for r in rows),
                   ap=ap, folds_beating_baseline=sum(r["pck@0.2"] > r["baseline"]["pck@0.2"] for r in rows),
                   train_seconds=sum(r["train_seconds"] for r in rows), seconds=round(seconds))
    print(f"pooled over {summary['figures']} validation figures ({summary['labelled_joints']} joints): "
          f"PCK@0.2 {summary['pck@0.2']:.3f} vs mean pose {summary['mean_pose_pck@0.2']:.3f}; "
          f"PCK@0.1 {summary['pck@0.1']:.3f} vs {summary['mean_pose_pck@0.1']:.3f}; AP {ap:.3f} "
          f"({summary['folds_beating_baseline']} of {len(rows)} folds beat the mean pose at 0.2; "
          f"training {summary['train_seconds'] / 60:.1f} min, all {seconds / 60:.1f} min)")
    key = f"misses@{MISS_THRESHOLD}"
    summary[key] = {kind: sum(r[key][kind] for r in rows) for kind in rows[0][key]}
    print(describe_misses(summary[key], summary["labelled_joints"]))
    return summary


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="coco.npy of the whole slice (coco_process.py)")
    p.add_argument("--out", default="runs/real_cv", help="folder for the folds' files, runs and results.json")
    p.add_argument("--folds", type=int, default=5, help="number of image groups")
    p.add_argument("--val-min-keypoints", type=int, default=8,
                   help="validation figures need this many labelled joints (training takes all)")
    p.add_argument("--checkpoint", default="last.keras", choices=["last.keras", "best.keras"],
                   help="checkpoint scored per fold; best.keras is picked on the same validation "
                        "figures, so its score is optimistic")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and of model.py")
    p.add_argument("--coco-root", default=None,
                   help="COCO folder of --data (annotations/person_keypoints_<split>.json) for AP against the "
                        "original annotations, pooled over the folds; omitted: approximate AP per fold, averaged")
    p.add_argument("--split", default="train2017", help="COCO split of --data (with --coco-root)")
    p.add_argument("--max-folds", type=int, default=0,
                   help="run only the first N of the --folds folds (0: all); a quicker, noisier estimate")
    p.add_argument("--jobs", type=int, default=1,
                   help="folds trained and scored at once (each its own model.py process); more than 1 "
                        "only where cores and accelerator memory allow, e.g. on a GPU box with "
                        "XLA_PYTHON_CLIENT_PREALLOCATE=false on the JAX backend")
    p.add_argument("--train-fraction", type=float, default=1.0,
                   help="train each fold on this seeded fraction (0-1] of its training images (a learning "
                        "curve; the validation figures stay the same)")
    p.add_argument("--reuse", action="store_true",
                   help="do not train a fold whose run/CHECKPOINT exists; score it again")
    p.add_argument("model_args", nargs="*", help="after --: arguments for model.py")
    args = p.parse_args()
    if not 0 < args.train_fraction <= 1:
        p.error(f"--train-fraction must be in (0, 1], not {args.train_fraction}")
    figures = open_figures(args.data)
    sidecar = read_sidecar(args.data)
    start = time.time()
    folds = image_folds(figures["image_id"], args.folds, args.seed)[:args.max_folds or None]
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        running = {pool.submit(run_fold, args, figures, sidecar, val_images, fold): fold
                   for fold, val_images in enumerate(folds)}
        done = {}
        for future in concurrent.futures.as_completed(running):
            fold, row = running[future], future.result()
            done[fold] = row
            print(f"fold {fold}: PCK@0.2 {row['pck@0.2']:.3f} vs mean pose "
                  f"{row['baseline']['pck@0.2']:.3f} ({time.time() - start:.0f} s)", flush=True)
    rows = [done[fold] for fold in sorted(done)]
    ap = pooled_ap(rows, args, figure_joint_names(figures))
    summary = report(rows, time.time() - start, ap[0])
    summary["decoding"] = decoding_table(rows)
    if ap[1] is not None:
        summary["mean_pose_ap"] = ap[1]
    for r in rows:
        del r["results"], r["annotation_ids"]
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"args": vars(args), "pooled": summary, "folds": rows}, f, indent=1)


if __name__ == "__main__":
    main()
