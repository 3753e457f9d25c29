"""How fast does automlp train one MLP, against the usual ways? One run, same nets, same epochs, same batches.

    python bench/trainer.py [--quick] [--device cpu|cuda] [--out bench/results/trainer-....json]

For each case (data set, architecture, batch size) it trains, with Adam (lr 1e-3, no weight decay, no early
stopping), for the same number of epochs:
  sklearn   MLPClassifier / MLPRegressor(solver="adam"); seconds per epoch = fit time / max_iter
  textbook  the usual PyTorch loop: TensorDataset + DataLoader(shuffle=True), loss.item() every batch
  automlp   automlp.engine.train (which also scores the validation split after every epoch: it does more)
Implementations take turns within each repeat, so a busy machine slows them alike. Each repeat is a fresh
fit (model built, data moved, optimizer made) timed end to end and divided by its epochs. The accuracy (R2 for
regression) is that of the weights after the last epoch on the same held-out split, so nothing is faster
because it does less. Achieved FLOP/s counts 6 x rows x parameters per epoch (forward 2, backward 4) against
the fp32 matmul rate measured at the start of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from automlp.data import TrainData
from automlp.model import MLPConfig, build_mlp, count_params
from automlp.engine import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
LR = 1e-3
ARCHS = {"2x128": (128, 128), "3x512": (512, 512, 512)}


# --------------------------------------------------------------------------- the machine's ceiling


def matmul_rate(device: torch.device) -> float:
    """Best fp32 FLOP/s of square products (TF32 off: this is the fp32 rate)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    sizes = (512, 1024, 2048) if device.type == "cpu" else (4096, 8192)
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        c = torch.empty(n, n, device=device)
        reps = max(3, int(3e9 / (2 * n**3))) if device.type == "cpu" else 20
        for _ in range(2):
            torch.mm(a, b, out=c)
        for _ in range(3):
            _sync(device)
            t = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=c)
            _sync(device)
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t))
    return best


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- data sets


@dataclass
class Dataset:
    name: str
    task: str
    X: np.ndarray  # float32, training rows
    y: np.ndarray  # int64 classes or float32 standardized targets
    X_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_outputs(self) -> int:
        return int(self.y.max()) + 1 if self.task == "classification" else 1

    def head(self, rows: int) -> Dataset:
        return Dataset(self.name, self.task, self.X[:rows], self.y[:rows], self.X_test, self.y_test)


def _split(name: str, task: str, X: np.ndarray, y: np.ndarray, test_size: float | int) -> Dataset:
    from sklearn.model_selection import train_test_split

    strat = y if task == "classification" else None
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=0, stratify=strat)
    return Dataset(name, task, Xtr, ytr, Xte, yte)


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as load

    X, y = load(return_X_y=True)
    return _split("digits", "classification", (X / 16).astype(np.float32), y.astype(np.int64), 0.2)


def load_synthetic() -> Dataset:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=120_000, n_features=50, n_informative=30, n_classes=5,
                               random_state=0)
    return _split("synthetic", "classification", X.astype(np.float32), y.astype(np.int64), 20_000)


def load_mnist(data_dir: Path) -> Dataset | None:
    path = data_dir / "mnist.npz"
    if not path.exists():
        return None
    m = np.load(path)
    flat = lambda a: (a.reshape(len(a), -1) / 255.0).astype(np.float32)  # noqa: E731
    return Dataset("mnist", "classification", flat(m["x_train"]), m["y_train"].astype(np.int64),
                   flat(m["x_test"]), m["y_test"].astype(np.int64))


def load_california(data_dir: Path) -> Dataset | None:
    path = data_dir / "california_housing.csv"
    if not path.exists():
        return None
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df = pd.read_csv(path)
    y = df.pop("median_house_value").to_numpy(np.float64)
    d = _split("california", "regression", df, y, 0.2)
    cat = ["ocean_proximity"]
    num = [c for c in df.columns if c not in cat]
    prep = ColumnTransformer([("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num),
                              ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat)])
    mean, std = d.y.mean(), d.y.std()
    return Dataset("california", "regression", prep.fit_transform(d.X).astype(np.float32),
                   ((d.y - mean) / std).astype(np.float32), prep.transform(d.X_test).astype(np.float32),
                   ((d.y_test - mean) / std).astype(np.float32))


def find_data_dir(given: str | None) -> Path:
    for cand in ([Path(given)] if given else []) + [REPO.parent / "shared" / "data", Path("/work/shared/data")]:
        if cand.is_dir():
            return cand
    return Path(given or REPO.parent / "shared" / "data")


# --------------------------------------------------------------------------- the three implementations


def _score(task: str, y: np.ndarray, out: np.ndarray) -> float:
    if task == "classification":
        return float(np.mean(out.argmax(axis=1) == y))
    from sklearn.metrics import r2_score

    return float(r2_score(y, out.reshape(-1)))


def run_sklearn(d: Dataset, widths: tuple[int, ...], batch: int, epochs: int, seed: int,
                device: torch.device) -> tuple[float, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    cls = MLPClassifier if d.task == "classification" else MLPRegressor
    est = cls(hidden_layer_sizes=widths, activation="relu", solver="adam", alpha=0.0, batch_size=batch,
              learning_rate_init=LR, max_iter=epochs, shuffle=True, tol=0.0, n_iter_no_change=10**9,
              early_stopping=False, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t = time.perf_counter()
        est.fit(d.X, d.y)
        elapsed = time.perf_counter() - t
    acc = est.score(d.X_test, d.y_test)  # accuracy / R2, like the others
    return elapsed, float(acc)


def _model(d: Dataset, widths: tuple[int, ...], seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    return build_mlp(MLPConfig(d.X.shape[1], d.n_outputs, widths, "relu")).to(device)


def run_textbook(d: Dataset, widths: tuple[int, ...], batch: int, epochs: int, seed: int,
                 device: torch.device) -> tuple[float, float]:
    t = time.perf_counter()
    model = _model(d, widths, seed, device)
    X, y = torch.from_numpy(d.X), torch.from_numpy(d.y if d.task == "classification" else d.y.reshape(-1, 1))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=batch, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss() if d.task == "classification" else nn.MSELoss()
    model.train()
    for _ in range(epochs):
        running = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            running += loss.item()
    _sync(device)
    elapsed = time.perf_counter() - t
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(d.X_test).to(device)).cpu().numpy()
    return elapsed, _score(d.task, d.y_test, out)


def run_automlp(d: Dataset, widths: tuple[int, ...], batch: int, epochs: int, seed: int,
                device: torch.device) -> tuple[float, float]:
    t = time.perf_counter()
    model = _model(d, widths, seed, device)
    data = TrainData(X_train=torch.from_numpy(d.X).to(device), y_train=torch.from_numpy(d.y).to(device),
                     X_val=torch.from_numpy(d.X_test).to(device), y_val=torch.from_numpy(d.y_test).to(device),
                     task=d.task, n_classes=d.n_outputs if d.task == "classification" else 0, device=device)
    config = TrainConfig(optimizer="adam", lr=LR, alpha=0.0, batch_size=batch, max_epochs=epochs,
                         patience=None, seed=seed, precision="fp32",
                         metric="accuracy" if d.task == "classification" else "r2")
    result = train(model, data, config)
    _sync(device)
    elapsed = time.perf_counter() - t
    return elapsed, result.history["val_score"][-1]  # the last epoch's weights, as for the others


IMPLS = {"sklearn": run_sklearn, "textbook": run_textbook, "automlp": run_automlp}


# --------------------------------------------------------------------------- cases and the run


@dataclass(frozen=True)
class Case:
    dataset: str
    arch: str
    batch: int
    epochs: int
    repeats: int
    rows: int | None = None  # a head of the training rows, where the full set would not fit the time budget


def cases(quick: bool) -> list[Case]:
    if quick:
        return [Case("digits", "2x128", 128, 10, 3), Case("digits", "2x128", 32, 5, 3),
                Case("synthetic", "3x512", 256, 1, 1, 25_000)]
    out = []
    for b in (32, 128, 256):
        out.append(Case("digits", "2x128", b, 20 if b == 32 else 30, 5))
    for b in (32, 256):
        out.append(Case("digits", "3x512", b, 5, 3))
        out.append(Case("synthetic", "2x128", b, 1, 3))
        out.append(Case("california", "2x128", b, 2 if b == 32 else 5, 3))
        out.append(Case("california", "3x512", b, 1, 3, None if b == 256 else 5_000))
        out.append(Case("mnist", "2x128", b, 1, 3, None if b == 256 else 20_000))
        out.append(Case("mnist", "3x512", b, 1, 2, 20_000 if b == 256 else 5_000))
    out.append(Case("synthetic", "3x512", 256, 1, 3))  # the 50%-of-ceiling target, on all 100,000 rows
    out.append(Case("synthetic", "3x512", 32, 1, 2, 10_000))
    return out


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    # sklearn computes through numpy's BLAS: give it the same number of threads as torch
    threadpool_limits(limits=threads)
    data_dir = find_data_dir(args.data_dir)
    print(f"torch {torch.__version__}, {threads} threads, {device} ({_device_name(device)}), "
          f"load average {os.getloadavg()[0]:.2f}",
          flush=True)
    rate = matmul_rate(device)
    print(f"fp32 matmul rate: {rate / 1e9:.1f} GFLOP/s", flush=True)
    loaders = {"digits": load_digits, "synthetic": load_synthetic, "mnist": lambda: load_mnist(data_dir),
               "california": lambda: load_california(data_dir)}
    loaded: dict[str, Dataset | None] = {}
    rows = []
    t_start = time.perf_counter()
    for case in cases(args.quick):
        if case.dataset not in loaded:
            loaded[case.dataset] = loaders[case.dataset]()
        d = loaded[case.dataset]
        if d is None:
            print(f"skip {case.dataset}: not found in {data_dir}", flush=True)
            continue
        if case.rows:
            d = d.head(case.rows)
        rows += run_case(d, case, device, rate)
    total = time.perf_counter() - t_start
    return {"torch": torch.__version__, "device": str(device), "device_name": _device_name(device),
            "threads": threads, "quick": args.quick,
            "matmul_flops": rate, "total_s": total, "load_avg_end": os.getloadavg()[0], "rows": rows}


def run_case(d: Dataset, case: Case, device: torch.device, rate: float) -> list[dict]:
    widths = ARCHS[case.arch]
    params = count_params(MLPConfig(d.X.shape[1], d.n_outputs, widths, "relu"))
    per_epoch: dict[str, list[float]] = {k: [] for k in IMPLS}
    scores: dict[str, list[float]] = {k: [] for k in IMPLS}
    names = list(IMPLS)
    for r in range(case.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:  # take turns, starting elsewhere each time
            elapsed, acc = IMPLS[name](d, widths, case.batch, case.epochs, r, device)
            per_epoch[name].append(elapsed / case.epochs)
            scores[name].append(acc)
    ref = statistics.median(per_epoch["automlp"])
    out = []
    for name in names:
        med = statistics.median(per_epoch[name])
        row = {"dataset": d.name, "rows": len(d.X), "features": d.X.shape[1], "arch": case.arch, "impl": name,
               "batch": case.batch, "epochs": case.epochs, "repeats": case.repeats, "params": params,
               "s_per_epoch": med, "min_s": min(per_epoch[name]), "max_s": max(per_epoch[name]),
               "vs_automlp": med / ref, "flops": 6 * len(d.X) * params / med,
               "pct_of_matmul": 100 * 6 * len(d.X) * params / med / rate,
               "metric": "accuracy" if d.task == "classification" else "r2",
               "score": statistics.median(scores[name]), "all_s_per_epoch": per_epoch[name],
               "all_scores": scores[name]}
        out.append(row)
        print(format_row(row), flush=True)
    return out


HEADER = (f"{'data set':<11}{'rows x feat':>14} {'arch':<6}{'impl':<9}{'batch':>5}{'ep':>3}{'x':>2} "
          f"{'s/epoch (min-max)':>28} {'x automlp':>9} {'GFLOP/s':>8} {'%peak':>6} {'score':>11}")


def format_row(r: dict) -> str:
    t = lambda s: f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"  # noqa: E731
    spread = f"{t(r['s_per_epoch'])} ({t(r['min_s'])}-{t(r['max_s'])})"
    return (f"{r['dataset']:<11}{r['rows']:>8} x {r['features']:<3} {r['arch']:<6}{r['impl']:<9}{r['batch']:>5}"
            f"{r['epochs']:>3}{r['repeats']:>2} {spread:>28} {r['vs_automlp']:>8.2f}x {r['flops'] / 1e9:>8.1f} "
            f"{r['pct_of_matmul']:>5.1f}% {r['metric'][:3]} {r['score']:.4f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few cases, under a minute")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores available)")
    p.add_argument("--data-dir", default=None, help="folder with mnist.npz and california_housing.csv")
    p.add_argument("--out", default=None, help="JSON output (default: bench/results/trainer-<time>.json)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available to torch")
    print("ep = epochs per fit, x = repeats (fresh fits); score = accuracy (acc) or R2 (r2) on held-out rows")
    print(HEADER, flush=True)
    result = run(args)
    out = Path(args.out) if args.out else REPO / "bench" / "results" / time.strftime("trainer-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"total {result['total_s']:.0f} s; load average at the end {result['load_avg_end']:.2f}; wrote {out}")


if __name__ == "__main__":
    main()
