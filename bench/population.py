"""Population training throughput: member-epochs/s of K stacked MLPs against one-at-a-time training.

    python bench/population.py [--quick] [--device cpu|cuda] [--out bench/results/population.json]
    python bench/population.py --e2e [--budget-s 60] [--examples auto_mpg breast_cancer] [--threads N] [--plain]
                                                          # whole searches: population 1 vs auto, same budget

Rows (all measured in the same run, medians of repeats): the machine's fp32 matmul rate (the ceiling), a plain
PyTorch loop on device-resident tensors with Adam(fused=True) (one net at a time), automlp's sequential trainer
(`automlp.engine.train`, the stack of one, when present), scikit-learn's MLPClassifier, and the stack at K = 1, 8, 16, 32, 128.
A "member-epoch" is one pass of one network over the training rows; %ceil = achieved matmul FLOP/s (6 x rows x
sum(in x out) per member-epoch: forward 2, backward 4) over the measured ceiling.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from sklearn.datasets import load_digits, make_classification
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from automlp.data import TrainData  # noqa: E402
from automlp.engine import TrainConfig  # noqa: E402
from automlp.engine.config import member_losses  # noqa: E402
from automlp.engine.optim import StackedOptimizer  # noqa: E402
from automlp.engine.stack import StackStepper  # noqa: E402
from automlp.model import MLPConfig  # noqa: E402
from automlp.spec import PLAIN_MLP  # noqa: E402

WIDTHS = (128, 128)
BATCH = 128


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def flops_per_member_epoch(n_rows, n_in, n_out):
    sizes = [n_in, *WIDTHS, n_out]
    return 6 * n_rows * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def datasets(quick):
    X, y = load_digits(return_X_y=True)
    yield "digits", torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    n = 100_000
    X, y = make_classification(n, 50, n_informative=20, n_classes=5, random_state=0)
    yield "100k_x_50", torch.tensor(X, dtype=torch.float32), torch.tensor(y)


# ---- one network at a time ------------------------------------------------------------------------------------


def plain_mlp(n_in, n_out):
    sizes = [n_in, *WIDTHS]
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], n_out))


def plain_epoch_fn(X, y, n_out, max_steps):
    """The baseline loop: tensors resident on the device, a randperm per epoch, Adam(fused=True), no .item()."""
    model = plain_mlp(X.shape[1], n_out).to(X.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = nn.CrossEntropyLoss()

    def run():
        perm = torch.randperm(X.shape[0], device=X.device)
        for s in range(0, min(X.shape[0], max_steps * BATCH), BATCH):
            idx = perm[s : s + BATCH]
            loss = loss_fn(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def sklearn_epoch_time(X, y, n_epochs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(WIDTHS, batch_size=BATCH, max_iter=n_epochs, tol=0.0, n_iter_no_change=n_epochs + 1,
                        shuffle=True, random_state=0)  # fmt: skip
    Xn, yn = X.cpu().numpy(), y.cpu().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        clf.fit(Xn, yn)
    return (time.perf_counter() - start) / n_epochs


def automlp_epoch_fn(X, y, n_out):
    """automlp's own sequential trainer (automlp.engine.train, fused Adam); one epoch per call, on the rows all
    other rows train on (the validation pass it makes each epoch is on a fifth of them, as in a search)."""
    from automlp.engine import train
    from automlp.model import build_mlp

    n_val = max(1, X.shape[0] // 5)
    data = TrainData(X, y, X[:n_val], y[:n_val], "classification", n_out, X.device)
    model = build_mlp(MLPConfig(X.shape[1], n_out, WIDTHS, "relu", 0.0)).to(X.device)
    config = TrainConfig(optimizer="adam", lr=1e-3, batch_size=BATCH, max_epochs=1, patience=None)
    return (lambda: train(model, data, config)), X.shape[0]


# ---- the stack ------------------------------------------------------------------------------------------------


def make_stack(k, X, y, n_out, fused=None):
    """The stack train_stack runs: K members of 2x128 relu, lr from 1e-4 to 1e-2, on the rows X (a fifth validates)."""
    n_val = max(1, X.shape[0] // 5)
    data = TrainData(X, y, X[:n_val], y[:n_val], "classification", n_out, X.device)
    lrs = torch.logspace(-4, -2, k).tolist()
    configs = [TrainConfig(optimizer="adam", lr=lr, alpha=1e-4, batch_size=BATCH, seed=i) for i, lr in enumerate(lrs)]
    stepper = StackStepper([MLPConfig(X.shape[1], n_out, WIDTHS, "relu")] * k, configs, [data] * k, data, 1)
    if fused is not None:  # the optimizer forms compared on the autograd stack (the kernel has its own update)
        net, stepper.kernel = stepper.net, None
        stepper.opt = StackedOptimizer(net.flat, net.flat_grad, "adam", {"lr": lrs, "alpha": [1e-4] * k},
                                       fused=fused, n_decay=net.n_weights)
    return stepper


def stack_epoch_fn(k, X, y, n_out, max_steps, live=None, fused=None):
    n = min(X.shape[0], max_steps * BATCH)
    stepper = make_stack(k, X[:n], y[:n], n_out, fused=fused)
    scales = [1.0] * k
    for row in range(live if live is not None else k, k):
        stepper.freeze(row)
        scales[row] = 0.0
    stepper.set_lr_scales(scales)
    gen = torch.Generator(device=X.device).manual_seed(0)

    def run():  # what train_stack does around its epochs: subnormals flushed on CPU
        flushed = X.device.type == "cpu" and torch.set_flush_denormal(True)
        perm = torch.randperm(n, generator=gen, device=X.device)
        stepper.train_epoch([perm] * k)
        stepper.evaluate()  # the validation pass of an epoch, as train() makes it
        if flushed:
            torch.set_flush_denormal(False)

    return run


def vmap_step_fn(k, X, y, n_out):
    """The alternative the issue asks to measure: torch.func.vmap over functional_call of one nn.Sequential."""
    from torch.func import functional_call, stack_module_state, vmap

    models = [plain_mlp(X.shape[1], n_out).to(X.device) for _ in range(k)]
    params, buffers = stack_module_state(models)
    base = plain_mlp(X.shape[1], n_out).to("meta")

    def f(p, b, xb):
        return functional_call(base, (p, b), (xb,))

    batched = vmap(f, in_dims=(0, 0, None))
    xb, yb = X[:BATCH], y[:BATCH]

    def run():
        out = batched(params, buffers, xb)
        loss = member_losses(out, yb, "classification").sum()
        grads = torch.autograd.grad(loss, list(params.values()))
        return grads

    return run


def bmm_step_fn(k, X, y, n_out):
    net = make_stack(k, X, y, n_out).net
    xb, yb = X[:BATCH], y[:BATCH]

    def run():
        net.flat_grad.zero_()
        member_losses(net(xb), yb, "classification").sum().backward()

    return run


# ---- the run --------------------------------------------------------------------------------------------------


def round_robin(contestants, device, reps, min_s):
    """Median seconds per call of each fn, timed in interleaved rounds so load drift hits every row alike."""
    times = {label: [] for label in contestants}
    for fn in contestants.values():
        fn()  # warm-up
    sync(device)
    for _ in range(reps):
        for label, fn in contestants.items():
            n, start = 0, time.perf_counter()
            while True:
                fn()
                n += 1
                sync(device)
                if time.perf_counter() - start >= min_s:
                    break
            times[label].append((time.perf_counter() - start) / n)
    return {label: statistics.median(t) for label, t in times.items()}


def sklearn_epoch_fn(X, y, n_epochs):
    return lambda: sklearn_epoch_time(X, y, n_epochs)


def bench(args):
    device = torch.device(args.device)
    reps, min_s = (3, 0.1) if args.quick else (5, 0.25)
    ks = [1, 8, 16, 32] if args.quick else [1, 8, 16, 32, 128]
    n = 2048 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    mm = lambda: torch.mm(a, b)  # noqa: E731
    rows = []
    print(f"# device {device} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    for name, X, y in datasets(args.quick):
        X, y = X.to(device), y.to(device)
        n_out = int(y.max()) + 1
        big = X.shape[0] > 10_000
        max_steps = (25 if args.quick else 60) if big else 10**9
        n_used = min(X.shape[0], max_steps * BATCH)
        fpe = flops_per_member_epoch(X.shape[0], X.shape[1], n_out)
        # label -> (fn, K, rows trained per call); every row of a table is timed in the same interleaved rounds
        n_all = X.shape[0]
        # label -> (fn, K, member-epochs per call); all rows of a table are timed in the same interleaved rounds
        plan = {"fp32 matmul ceiling": (mm, 0, 0),
                "plain loop, Adam(fused)": (plain_epoch_fn(X, y, n_out, max_steps), 1, n_used / n_all)}  # fmt: skip
        auto = automlp_epoch_fn(X, y, n_out)
        if auto is not None:
            plan["automlp sequential train()"] = (auto[0], 1, auto[1] / n_all)
        if device.type == "cpu" and not big:
            n_sk = 2 if args.quick else 3
            plan["sklearn MLPClassifier"] = (sklearn_epoch_fn(X, y, n_sk), 1, n_sk)
        for k in ks:
            steps = max(4, max_steps * 32 // k) if big and k > 32 else max_steps  # keep one call short
            plan[f"population stack K={k}"] = (stack_epoch_fn(k, X, y, n_out, steps), k,
                                               k * min(n_all, steps * BATCH) / n_all)  # fmt: skip
        secs = round_robin({label: fn for label, (fn, _, _) in plan.items()}, device, reps, min_s)
        ceiling = 2 * n**3 / secs.pop("fp32 matmul ceiling")
        rows.append({"data": name, "row": "fp32 matmul ceiling", "gflops": round(ceiling / 1e9, 1)})
        print(f"\n## {name}: {X.shape[0]} x {X.shape[1]}, {n_out} classes, 2x128 relu, batch {BATCH}; "
              f"fp32 matmul ceiling {ceiling / 1e9:.1f} GFLOP/s (measured in the same rounds)\n")  # fmt: skip
        print("| row | K | member-epochs/s | ms/member-epoch | % ceiling | x plain | x automlp seq | x sklearn |")
        print("|---|---|---|---|---|---|---|---|")
        rate = {label: plan[label][2] / sec for label, sec in secs.items()}
        base = {"plain": rate.get("plain loop, Adam(fused)"), "seq": rate.get("automlp sequential train()"),
                "sk": rate.get("sklearn MLPClassifier")}  # fmt: skip
        for label, me_s in rate.items():
            k = plan[label][1]
            r = {"data": name, "row": label, "K": k, "member_epochs_per_s": round(me_s, 3),
                 "ms_per_member_epoch": round(1e3 / me_s, 3), "pct_ceiling": round(100 * me_s * fpe / ceiling, 1)}  # fmt: skip
            ratios = {f"x_{b}": round(me_s / v, 2) for b, v in base.items() if v and label.startswith("population")}
            r.update(ratios)
            rows.append(r)
            cells = [f"{ratios[f'x_{b}']:.2f}" if f"x_{b}" in ratios else "" for b in ("plain", "seq", "sk")]
            print(f"| {label} | {k} | {me_s:.2f} | {1e3 / me_s:.2f} | {r['pct_ceiling']:.1f} | " + " | ".join(cells) + " |")
        if not big:
            side_measurements(X, y, n_out, device, reps, min_s, rows, name)
    return {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}


def side_measurements(X, y, n_out, device, reps, min_s, rows, name):
    k = 16
    t = round_robin({"bmm": bmm_step_fn(k, X, y, n_out), "vmap": vmap_step_fn(k, X, y, n_out),
                     "masked": stack_epoch_fn(32, X, y, n_out, 10**9, live=16),
                     "compact": stack_epoch_fn(16, X, y, n_out, 10**9),
                     "fused": stack_epoch_fn(16, X, y, n_out, 10**9, fused=True),
                     "batched": stack_epoch_fn(16, X, y, n_out, 10**9, fused=False)}, device, reps, min_s)  # fmt: skip
    t_bmm, t_vmap, t_masked, t_compact = t["bmm"], t["vmap"], t["masked"], t["compact"]
    rows.append({"data": name, "row": "K=16 epoch by optimizer form", "per_member_fused_ms": round(t["fused"] * 1e3, 2),
                 "batched_ops_ms": round(t["batched"] * 1e3, 2)})  # fmt: skip
    print(f"# K=16 epoch, Adam as one fused kernel call per member {t['fused'] * 1e3:.2f} ms, as ~10 batched ops over "
          f"the stack {t['batched'] * 1e3:.2f} ms")  # fmt: skip
    rows.append({"data": name, "row": "fwd+bwd step, K=16", "baddbmm_ms": round(t_bmm * 1e3, 3),
                 "vmap_functional_call_ms": round(t_vmap * 1e3, 3)})  # fmt: skip
    print(f"# K=16 forward+backward step: baddbmm {t_bmm * 1e3:.3f} ms, vmap(functional_call) {t_vmap * 1e3:.3f} ms "
          f"(x{t_vmap / t_bmm:.2f})")  # fmt: skip
    rows.append({"data": name, "row": "16 live of 32", "frozen_in_place_ms_per_epoch": round(t_masked * 1e3, 2),
                 "compacted_ms_per_epoch": round(t_compact * 1e3, 2)})  # fmt: skip
    print(f"# 16 live members of 32: frozen in place {t_masked * 1e3:.2f} ms/epoch, compacted to 16 "
          f"{t_compact * 1e3:.2f} ms/epoch (x{t_masked / t_compact:.2f})")  # fmt: skip


def run_e2e(args):
    """Each example spec (search_spaces/<name>.yaml; default auto_mpg, 398 rows, r2, and breast_cancer, 569 rows,
    roc_auc) with the same seed and wall-clock budget, run with each training.population; finished trials and the
    best trial's validation and test score of each. Searches run one after another in this process."""
    import tempfile

    import optuna
    import yaml

    from automlp.report.summary import summarize
    from automlp.search.trial import TrialRecord
    from automlp.search import run_search
    from automlp.spec import validate_spec_dict

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    repo = Path(__file__).resolve().parents[1]
    out = {"budget_s": args.budget_s, "device": args.device, "threads": args.threads, "examples": {}}
    for example in args.examples:
        base = yaml.safe_load((repo / "search_spaces" / f"{example}.yaml").read_text())
        if "path" in base["data"]:
            base["data"]["path"] = str(repo / "search_spaces" / base["data"]["path"])
        base["study"]["validation"] = args.validation  # the example may ask for k-fold trials
        if args.plain:  # the plain MLP (the hand-written kernel), not the default space's blocks
            base["space"] = {**PLAIN_MLP, **base.get("space", {})}  # the example's own choices stay
        metric = base["study"].get("metric", "score")
        rows = []
        print(f"\n# end-to-end: search_spaces/{example}.yaml, study seed 0, timeout {args.budget_s:g} s each, "
              f"device {args.device}, {args.threads or 'default'} threads\n")  # fmt: skip
        print(f"| population | K | trials finished | complete | pruned | wall s | best val {metric} | its test |")
        print("|---|---|---|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            for population in args.populations:
                pop = population if population == "auto" else int(population)
                raw = dict(base)
                raw["training"] = {**base.get("training", {}), "population": pop, "device": args.device}
                if args.threads:
                    raw["training"]["threads"] = args.threads
                raw["study"] = {**base["study"], "name": f"e2e_{pop}", "n_trials": None, "timeout": args.budget_s,
                                "seed": 0}  # fmt: skip
                raw["output"] = {"dir": str(Path(tmp) / f"pop_{pop}")}
                spec = validate_spec_dict(raw)
                outcome = run_search(spec)
                summarize(outcome, spec)
                s, trials = outcome.summary, outcome.summary["trials"]
                finished = trials.get("COMPLETE", 0) + trials.get("PRUNED", 0)
                sizes = {(TrialRecord.read(t).population or {"size": 1})["size"] for t in outcome.study.trials}
                test = s["best"]["scores"]["test"][spec.study.metric]
                row = {"population": pop, "K": max(sizes), "finished": finished,
                       "complete": trials.get("COMPLETE", 0), "pruned": trials.get("PRUNED", 0),
                       "wall_s": s["wall_time_s"], "best_val": s["best"]["value"], "best_test": test}  # fmt: skip
                rows.append(row)
                print(f"| {pop} | {row['K']} | {finished} | {row['complete']} | {row['pruned']} | "
                      f"{row['wall_s']:.1f} | {row['best_val']:.4f} | {test:.4f} |", flush=True)  # fmt: skip
        if len(rows) == 2:
            a, b = rows
            print(f"\n# {example}: population {b['population']} / {a['population']}: "
                  f"x{b['finished'] / max(a['finished'], 1):.2f} finished, "
                  f"x{b['complete'] / max(a['complete'], 1):.2f} complete trials; best val {metric} "
                  f"{b['best_val']:.4f} vs {a['best_val']:.4f}")  # fmt: skip
        out["examples"][example] = rows
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer K, shorter timings (< 1 min)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="bench/results/population.json")
    ap.add_argument("--e2e", action="store_true", help="end-to-end search comparison instead")
    ap.add_argument("--budget-s", type=float, default=60.0, help="--e2e: wall-clock budget per search")
    ap.add_argument("--populations", nargs="+", default=["1", "auto"], help="--e2e: training.population values")
    ap.add_argument("--examples", nargs="+", default=["auto_mpg", "breast_cancer"],
                    help="--e2e: example specs in search_spaces/")
    ap.add_argument("--threads", type=int, help="--e2e: training.threads of each search")
    ap.add_argument("--validation", default="holdout", help="--e2e: study.validation of each search")
    ap.add_argument("--plain", action="store_true", help="--e2e: fix the space to the plain MLP")
    args = ap.parse_args()
    start = time.perf_counter()
    if args.e2e:
        result = run_e2e(args)
    else:
        result = bench(args)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    out = Path(args.out if not args.e2e or args.out != "bench/results/population.json" else
               "bench/results/population_e2e.json")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"# wrote {out} in {result['wall_s']} s")


if __name__ == "__main__":
    main()
