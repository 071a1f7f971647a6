"""Benchmark CPU inference latency per figure (batch 1) of Keras and each export.

    python benchmarks/bench_inference.py [--model runs/NAME/best.keras] [--runs 30] [--json out.json]

Without --model an untrained model of the default architecture at 320 x 320
(network.build_model()) is timed: latency does not depend on the weights. For every
backend the median (and 10th / 90th percentile) of --runs timed calls after --warmup
untimed ones is reported, for one 320 x 320 canvas:

- keras predict_maps: network.predict_maps (preprocessing, model.predict, tanh -> [0, 1]);
- keras call: the compiled forward pass alone (tf.function of model(x, training=False));
- saved_model: `evaluate.py --export saved_model` (inference.export_model), loaded with tf.saved_model.load;
- tflite: `evaluate.py --export tflite`, tf.lite.Interpreter with all cores (XNNPACK);
- decode: confidence_maps.decode_keypoints (dark) of the 80 x 80 x 13 maps, for scale.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def timed(fn, runs, warmup):
    """Seconds per call: median, p10, p90 over `runs` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_ms": 1000 * float(np.median(times)), "p10_ms": 1000 * float(np.percentile(times, 10)),
            "p90_ms": 1000 * float(np.percentile(times, 90))}


def main():
    parser = argparse.ArgumentParser(description="CPU latency per figure (batch 1) of Keras and each export.")
    parser.add_argument("--model", help="a trained .keras (default: an untrained network.build_model() at 320)")
    parser.add_argument("--runs", type=int, default=30, help="timed calls per backend")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from figure_pose.evaluation import inference
    model_lib = inference.import_network()
    import tensorflow as tf
    from figure_pose.core.confidence_maps import decode_keypoints
    model = model_lib.load_trained_model(args.model) if args.model else model_lib.build_model()
    size = int(model.inputs[0].shape[1])
    canvas = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    x = model_lib.preprocess_images(canvas).astype(np.float32)
    forward = tf.function(lambda t: model(t, training=False))
    results = {"cpu_threads": os.cpu_count(), "input_size": size, "parameters": int(model.count_params()),
               "tensorflow": tf.__version__}
    results["keras predict_maps"] = timed(lambda: model_lib.predict_maps(model, canvas, batch_size=1),
                                          args.runs, args.warmup)
    results["keras call"] = timed(lambda: [np.asarray(o) for o in forward(tf.constant(x))], args.runs, args.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("saved_model", "tflite"):
            path = inference.export_model(model, kind, os.path.join(tmp, kind))
            predict = inference.exported_predictor(path)
            results[kind] = timed(lambda: predict(None, canvas), args.runs, args.warmup)
            results[kind]["bytes"] = (os.path.getsize(path) if os.path.isfile(path) else
                                      sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path)
                                          for f in fs))
    maps = model_lib.predict_maps(model, canvas)
    results["decode (dark)"] = timed(lambda: decode_keypoints(maps, refine="dark"), args.runs, args.warmup)

    print(f"CPU latency per figure, batch 1, {size} x {size}, {results['parameters']:,} parameters, "
          f"{results['cpu_threads']} CPU threads, median of {args.runs} runs")
    print(f"{'backend':<20}{'median ms':>11}{'p10 ms':>9}{'p90 ms':>9}")
    for name, r in results.items():
        if isinstance(r, dict):
            print(f"{name:<20}{r['median_ms']:>11.1f}{r['p10_ms']:>9.1f}{r['p90_ms']:>9.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
