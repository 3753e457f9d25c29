"""The hand-written stack kernel (automlp.engine.kernel) against the sequential trainer and the autograd stack.

    python bench/stack_kernel.py [--quick] [--reps 5] [--out bench/results/stack_kernel.json]

Every row of a table is timed in the same interleaved rounds (medians of --reps), so load from other processes
hits all rows alike; compare ratios within a table. A member-epoch is one pass of one net over the training rows
plus its validation pass over a fifth of them (what `automlp.train.train` does each epoch); %ceil = achieved
matmul FLOP/s (6 x rows x sum(in x out) per member-epoch) over the fp32 matmul rate measured in the same rounds.

Tables: digits (1,797 x 64, 10 classes), 2x128 relu, batch 128: the sequential trainer (`automlp.train.train`,
the single-net hand-written path), the autograd stack (PopulationMLP + StackedOptimizer, as the population trainer
runs it) and the kernel at K = 16 and 32 (fused per-member update, and the vectorised update at K = 16).
100,000 x 50 (5 classes), 2x128 and 3x512, batch 128: a fixed number of steps per call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits, make_classification

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from automlp.engine.kernel import StackKernel  # noqa: E402
from automlp.engine.nets import StackedMLP  # noqa: E402

BATCH = 128


def round_robin(contestants: dict, reps: int, min_s: float) -> dict[str, float]:
    """Median seconds per call of each fn, timed in interleaved rounds."""
    times = {label: [] for label in contestants}
    for fn in contestants.values():
        fn()  # warm-up: work buffers, first-touch of memory
    for _ in range(reps):
        for label, fn in contestants.items():
            n, start = 0, time.perf_counter()
            while n == 0 or time.perf_counter() - start < min_s:
                fn()
                n += 1
            times[label].append((time.perf_counter() - start) / n)
    return {label: statistics.median(t) for label, t in times.items()}


def _stack(k, n_in, n_out, widths):
    net = StackedMLP(n_in, n_out, [widths] * k, "relu")
    for i in range(k):
        net.init_member(i, seed=i)
    return net, torch.logspace(-4, -2, k).tolist()


def sequential_fn(X, y, n_out, widths, epochs=1):
    """automlp's sequential trainer, `epochs` per call (its validation pass on a fifth of the rows)."""
    from automlp.data import TrainData
    from automlp.engine import TrainConfig, train
    from automlp.model import MLPConfig, build_mlp

    n_val = max(1, X.shape[0] // 5)
    data = TrainData(X, y, X[:n_val], y[:n_val], "classification", n_out, X.device)
    model = build_mlp(MLPConfig(X.shape[1], n_out, widths, "relu", 0.0))
    config = TrainConfig(optimizer="adam", lr=1e-3, alpha=1e-4, batch_size=BATCH, max_epochs=epochs,
                         patience=None)  # fmt: skip
    return lambda: train(model, data, config)


def autograd_fn(k, X, y, n_out, widths):
    from automlp.data import TrainData
    from automlp.engine import TrainConfig
    from automlp.engine.stack import StackStepper
    from automlp.model import MLPConfig

    lrs = torch.logspace(-4, -2, k).tolist()
    n_val = max(1, X.shape[0] // 5)
    data = TrainData(X, y, X[:n_val], y[:n_val], "classification", n_out, X.device)
    configs = [TrainConfig(lr=lr, alpha=1e-4, batch_size=BATCH, seed=i) for i, lr in enumerate(lrs)]
    stepper = StackStepper([MLPConfig(X.shape[1], n_out, widths, "relu")] * k, configs, [data] * k, data, 1)
    gen = torch.Generator().manual_seed(0)

    def run():  # what train_stack does around an epoch: subnormals flushed
        torch.set_flush_denormal(True)
        stepper.train_epoch([torch.randperm(X.shape[0], generator=gen)] * k)
        stepper.evaluate()
        torch.set_flush_denormal(False)

    return run


def kernel_fn(k, X, y, n_out, widths, fused=True):
    net, lrs = _stack(k, X.shape[1], n_out, widths)
    kernel = StackKernel(net.flat, net.layer_sizes, "relu", "classification", "adam", lr=lrs, alpha=[1e-4] * k,
                         fused=fused)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    n_val = X.shape[0] // 5

    def run():
        kernel.train_epoch(X, y, torch.randperm(X.shape[0], generator=gen), BATCH)
        kernel.evaluate(X[:n_val], y[:n_val])[0].sum().item()  # the engine's one sync an epoch

    return run


def matmul_fn():
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return lambda: torch.mm(a, b)


def table(name, X, y, widths, plan, reps, min_s, rows_out):
    """plan: label -> (fn, K, member-epochs per call); prints and records one interleaved table."""
    n_out = int(y.max()) + 1
    sizes = [X.shape[1], *widths, n_out]
    fpe = 6 * X.shape[0] * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    plan = {"fp32 matmul ceiling": (matmul_fn(), 0, 0), **plan}
    secs = round_robin({label: fn for label, (fn, _, _) in plan.items()}, reps, min_s)
    ceiling = 2 * 1024**3 / secs.pop("fp32 matmul ceiling")
    print(f"\n## {name}: {X.shape[0]} x {X.shape[1]}, {'x'.join(map(str, widths))} relu, batch {BATCH}; fp32 matmul "
          f"{ceiling / 1e9:.1f} GFLOP/s in the same rounds; load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| row | K | ms/member-epoch | % ceiling | x sequential | x autograd stack (same K) |")
    print("|---|---|---|---|---|---|")
    ms = {label: 1e3 * secs[label] / plan[label][2] for label in secs}
    seq = ms.get("sequential train()")
    for label, v in ms.items():
        k = plan[label][1]
        ag = ms.get(f"autograd stack K={k}")
        r = {"data": name, "widths": list(widths), "row": label, "K": k, "ms_per_member_epoch": round(v, 3),
             "pct_ceiling": round(100 * fpe / (v / 1e3) / ceiling, 1), "ceiling_gflops": round(ceiling / 1e9, 1),
             "x_sequential": round(seq / v, 2) if seq else None,
             "x_autograd_stack": round(ag / v, 2) if ag and label.startswith("kernel") else None}  # fmt: skip
        rows_out.append(r)
        cell = lambda x: f"{x:.2f}" if x else ""  # noqa: E731
        print(f"| {label} | {k} | {v:.2f} | {r['pct_ceiling']:.1f} | {cell(r['x_sequential'])} | "
              f"{cell(r['x_autograd_stack'])} |", flush=True)  # fmt: skip


def run(args) -> dict:
    torch.manual_seed(0)
    reps, min_s = (3, 0.2) if args.quick else (args.reps, 0.5)
    rows: list[dict] = []
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    Xd, yd = load_digits(return_X_y=True)
    X, y = torch.tensor(Xd / 16.0, dtype=torch.float32), torch.tensor(yd)
    w = (128, 128)
    plan = {"sequential train()": (sequential_fn(X, y, 10, w, epochs=4), 1, 4)}  # setup amortised over 4
    for k in (16, 32):
        plan[f"autograd stack K={k}"] = (autograd_fn(k, X, y, 10, w), k, k)
        plan[f"kernel K={k}"] = (kernel_fn(k, X, y, 10, w), k, k)
    plan["kernel K=16, vectorised update"] = (kernel_fn(16, X, y, 10, w, fused=False), 16, 16)
    table("digits", X, y, w, plan, reps, min_s, rows)
    Xb, yb = make_classification(100_000, 50, n_informative=20, n_classes=5, random_state=0)
    Xb, yb = torch.tensor(Xb, dtype=torch.float32), torch.tensor(yb)
    steps = 10 if args.quick else 30
    Xh, yh = Xb[: steps * BATCH], yb[: steps * BATCH]  # a call trains `steps` batches, then validates a fifth
    for w, ks in (((128, 128), (1, 16, 32)), ((512, 512, 512), (1, 4, 8))):
        frac = Xh.shape[0] / Xb.shape[0]  # member-epochs per call, of the 100,000-row epoch
        plan = {"sequential train()": (sequential_fn(Xh, yh, 5, w), 1, frac)}
        for k in ks:
            plan[f"kernel K={k}"] = (kernel_fn(k, Xh, yh, 5, w), k, k * frac)
        plan[f"autograd stack K={ks[-1]}"] = (autograd_fn(ks[-1], Xh, yh, 5, w), ks[-1], ks[-1] * frac)
        table("100k_x_50", Xb, yb, w, plan, reps, min_s, rows)
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "load_avg_end": os.getloadavg()[0],
            "rows": rows}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = p.parse_args()
    if args.threads:
        # On a machine shared with other busy processes two OpenMP threads can be 10x slower than one (measured
        # here: a 3x512 epoch 21 s with 2 threads, 1.9 s with 1, load average 20 on 2 cores).
        torch.set_num_threads(args.threads)
    result = run(args)
    stamp = time.strftime("stack_kernel-%Y%m%d-%H%M%S.json")
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / stamp
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
