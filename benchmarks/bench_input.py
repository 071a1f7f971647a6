"""Host side of the training input alone: figures/s and bytes per figure sent to the device.

    python benchmarks/bench_input.py --data sample/coco.npy --size 320

Times, in one run, the input pipeline model.py uses (figure_dataset.FigureBatches: the
host reads stored uint8 crops and keypoints and draws the augmentation numbers; the device
does the rest) against the old one (the host warps every figure with OpenCV, renders its
maps, converts the image to float32 and sends one (B, M, M, 2J) target per output), both
through Keras' own PyDataset enqueuer (the threads model.fit uses) with `--workers` 1 and 2.
The file is read once first so both find it in the page cache. Ends with one JSON line.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class OldHostBatches:
    """The old pipeline's __getitem__, on top of a FigureBatches for the figure order:
    per figure a full canvas, an OpenCV warp and maps on the host; float32 images and
    n_outputs copies of a (B, M, M, 2J) target (maps in [-1, 1], then the labelled mask)."""

    def __init__(self, batches, stride=4, n_outputs=3):
        from figure_pose.core.figures import open_figures
        self.batches, self.stride, self.n_outputs = batches, stride, n_outputs
        self.figures = open_figures(batches.path)

    def __call__(self, index):
        from figure_pose.core.confidence_maps import render_confidence_maps
        from figure_pose.core.figures import canvas_image
        from figure_pose.data.figure_dataset import reference_augment
        b = self.batches
        params = b.augmentation(index, b.batch_size)
        images, maps, masks = [], [], []
        for k, i in enumerate(b.global_positions(index)):
            record = self.figures[i]
            image, kp = reference_augment(canvas_image(record), record["keypoints"], params[k, :6],
                                          params[k, 6] > 0.5, b.flip_perm, b.size)
            images.append(image)
            maps.append(render_confidence_maps(kp, b.size // self.stride, self.stride))
            masks.append((kp[:, 2] > 0).astype(np.float32))
        maps = np.stack(maps)
        mask = np.broadcast_to(np.stack(masks)[:, None, None, :], maps.shape)
        target = np.concatenate([maps * 2.0 - 1.0, mask], axis=-1).astype(np.float32)
        return np.stack(images).astype(np.float32) / 127.5 - 1.0, (target,) * self.n_outputs


def make_batches(path, size, batch_size, workers, steps, old=False):
    """A PyDataset of `steps` augmented training batches: the new one, or the old host pipeline."""
    import keras

    from figure_pose.data.figure_dataset import Augment, FigureBatches
    new = FigureBatches(path, batch_size=batch_size, size=size, augment=Augment(), seed=0,
                        steps=steps, workers=workers, max_queue_size=max(10, 2 * workers))
    if not old:
        return new
    make = OldHostBatches(new)

    class Old(keras.utils.PyDataset):
        def __len__(self):
            return len(new)

        def __getitem__(self, index):
            return make(index)
    return Old(workers=workers, max_queue_size=max(10, 2 * workers))


def nbytes(batch):
    """Bytes of every array in a (nested) batch."""
    if isinstance(batch, dict):
        return sum(nbytes(v) for v in batch.values())
    if isinstance(batch, (tuple, list)):
        return sum(nbytes(v) for v in batch)
    return batch.nbytes


def measure(dataset, batches, batch_size):
    """(figures/s, bytes per figure) over `batches` batches drawn through Keras' enqueuer."""
    # PyDatasetAdapter is what model.fit wraps a PyDataset in (private, but it is the real path).
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter
    adapter = PyDatasetAdapter(dataset, shuffle=False)
    adapter.on_epoch_begin()
    iterator = iter(adapter.get_numpy_iterator())
    first = next(iterator)  # start-up (threads, first read) is not timed
    start, sent = time.perf_counter(), 0
    for _ in range(batches):
        sent += nbytes(next(iterator))
    seconds = time.perf_counter() - start
    adapter.on_epoch_end()
    figures = batches * batch_size
    return figures / seconds, nbytes(first) / batch_size if sent == 0 else sent / figures


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a coco.npy (e.g. the demo's sample/coco.npy)")
    p.add_argument("--size", type=int, default=320, help="network input side")
    p.add_argument("--batch-size", type=int, default=64, help="figures per batch")
    p.add_argument("--batches", type=int, default=100, help="timed batches of the new pipeline")
    p.add_argument("--old-batches", type=int, default=5, help="timed batches of the old pipeline")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="reading threads to try")
    args = p.parse_args(argv)
    with open(args.data, "rb") as f:  # into the page cache, so both pipelines read from memory
        while f.read(1 << 24):
            pass
    rows = []
    for old in (False, True):
        for workers in args.workers:
            batches = args.old_batches if old else args.batches
            dataset = make_batches(args.data, args.size, args.batch_size, workers, batches + 1, old)
            per_s, per_figure = measure(dataset, batches, args.batch_size)
            rows.append(dict(pipeline="old" if old else "new", workers=workers, figures_per_s=per_s,
                             bytes_per_figure=per_figure))
            print(f"{rows[-1]['pipeline']:4} workers {workers}: {per_s:9.0f} figures/s, "
                  f"{per_figure:11,.0f} bytes per figure to the device", flush=True)
    best_new = max((r for r in rows if r["pipeline"] == "new"), key=lambda r: r["figures_per_s"])
    best_old = max((r for r in rows if r["pipeline"] == "old"), key=lambda r: r["figures_per_s"])
    print(json.dumps({"size": args.size, "batch_size": args.batch_size, "cpu_cores": os.cpu_count(),
                      "host_figures_per_s": round(best_new["figures_per_s"]),
                      "best_workers": best_new["workers"],
                      "bytes_per_figure_to_device": round(best_new["bytes_per_figure"]),
                      "old_host_figures_per_s": round(best_old["figures_per_s"]),
                      "old_bytes_per_figure_to_device": round(best_old["bytes_per_figure"]),
                      "speedup": round(best_new["figures_per_s"] / best_old["figures_per_s"], 1)}))


if __name__ == "__main__":
    main()
