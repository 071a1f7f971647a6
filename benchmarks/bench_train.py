"""Training throughput of the simple network vs the original, on this machine, in one run.

    python benchmarks/bench_train.py                      # 320 x 320, a few minutes on 2 cores
    python benchmarks/bench_train.py --size 320 --steps 3 --simple-batches 8 16 32

Each (arch, batch) runs in its own process (so peak RSS is its own): build, compile,
`--warmup` train steps (graph tracing, excluded), then `--steps` timed `train_on_batch`
calls on a fixed random batch with real-shaped targets. Prints params, GFLOPs per figure
(forward, 2 x multiply-adds, from layer shapes), figures/s and peak RSS.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure(arch, size, batch, steps, warmup, width):
    """One config in this process: dict of params, gflops, figures/s, peak RSS (MB)."""
    import numpy as np

    import model as M
    net = M.compile_model(M.build_model(arch, 13, size, width), lr=2e-4)
    m = net.outputs[0].shape[1]
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    target = np.concatenate([rng.uniform(-1, 1, (batch, m, m, 13)),
                             np.ones((batch, m, m, 13))], axis=-1).astype(np.float32)
    y = (target,) * len(net.outputs)
    for _ in range(warmup):
        net.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        net.train_on_batch(x, y)
    seconds = time.perf_counter() - start
    return dict(arch=arch, batch=batch, params_m=net.count_params() / 1e6,
                gflops=M.count_flops(net) / 1e9, figures_per_s=batch * steps / seconds,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_child(args, arch, batch):
    """measure() in a fresh process; returns its dict (or None if it failed)."""
    cmd = [sys.executable, __file__, "--child", arch, str(batch), "--size", str(args.size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--width", str(args.width)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        print(f"{arch} batch {batch} failed:\n{result.stderr[-1500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def report(rows, size):
    """Print the table and the per-figure speed-up of simple over original at batch 8 and best."""
    print(f"\ntraining throughput at {size}x{size} on {os.cpu_count()} CPU cores")
    print(f"{'arch':9} {'batch':>5} {'params M':>9} {'GFLOPs':>7} {'fig/s':>7} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['arch']:9} {r['batch']:5d} {r['params_m']:9.2f} {r['gflops']:7.2f} "
              f"{r['figures_per_s']:7.2f} {r['peak_rss_mb']:12.0f}")
    by = {a: [r for r in rows if r["arch"] == a] for a in ("simple", "original")}
    if all(by.values()):
        at8 = {a: next((r for r in rs if r["batch"] == 8), rs[0]) for a, rs in by.items()}
        best = {a: max(rs, key=lambda r: r["figures_per_s"]) for a, rs in by.items()}
        print(f"speed-up per figure at batch 8: {at8['simple']['figures_per_s'] / at8['original']['figures_per_s']:.1f}x; "
              f"best vs best: {best['simple']['figures_per_s'] / best['original']['figures_per_s']:.1f}x "
              f"(simple batch {best['simple']['batch']}, original batch {best['original']['batch']}); "
              f"FLOPs ratio {at8['original']['gflops'] / at8['simple']['gflops']:.1f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=320, help="input size of both networks")
    p.add_argument("--steps", type=int, default=3, help="timed train steps per config")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (tracing)")
    p.add_argument("--width", type=float, default=1.0, help="--width of both networks")
    p.add_argument("--simple-batches", type=int, nargs="+", default=[8, 16, 32], help="batches for simple")
    p.add_argument("--original-batches", type=int, nargs="+", default=[8], help="batches for original")
    p.add_argument("--child", nargs=2, metavar=("ARCH", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        arch, batch = args.child
        print(json.dumps(measure(arch, args.size, int(batch), args.steps, args.warmup, args.width)))
        return
    rows = [run_child(args, "simple", b) for b in args.simple_batches]
    rows += [run_child(args, "original", b) for b in args.original_batches]
    report([r for r in rows if r], args.size)


if __name__ == "__main__":
    main()
