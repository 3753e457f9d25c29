"""`automlp predict` on 1,000,000 rows x 50 features: throughput (rows/s) and peak memory (RSS).

    python bench/predict.py [--rows 1000000] [--workdir /tmp/automlp-bench-predict]

Steps: a synthetic classification set (45 numeric columns, 5 categorical, 3 classes, a few missing values);
a one-trial `automlp search` on 20,000 of its rows exports a model; then each command below runs in its own
process on the same 1M-row CSV, timed from start to exit, with its peak RSS from wait4():

- automlp predict (streamed, default 100,000-row chunks), with 10,000-row chunks, and on the file's first fifth
  (its peak memory should equal the whole file's: memory is set by the chunk, not the file);
- baseline "whole file": pandas.read_csv of the whole file, then Predictor.predict_proba on it (no streaming);
- baseline "parse only": pandas.read_csv of the whole file and nothing else (the CSV parsing floor).

Each process pays its own start-up (imports: about 2-4 s), included in the times, as a user would see it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_NUM, N_CAT = 45, 5
AUTOMLP = str(Path(sys.executable).with_name("automlp"))


def synth(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_NUM)).astype(np.float32)
    cats = rng.integers(0, 12, size=(n, N_CAT))
    w = np.random.default_rng(0).normal(size=(N_NUM, 3))
    logits = X @ w + (cats[:, :1] % 3 == np.arange(3)) * 2.0
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(N_NUM)])
    frame["x0"] = np.where(rng.random(n) < 0.01, np.nan, frame["x0"])  # 1% missing
    for j in range(N_CAT):
        frame[f"c{j}"] = np.char.add("k", cats[:, j].astype(str))
    frame["y"] = np.asarray(["a", "b", "c"])[logits.argmax(axis=1)]
    return frame


def write_big(path: Path, rows: int, chunk: int = 100_000) -> None:
    with open(path, "w", newline="") as f:
        for i, start in enumerate(range(0, rows, chunk)):
            part = synth(min(chunk, rows - start), seed=100 + i).drop(columns="y")
            part.to_csv(f, header=i == 0, index=False, float_format="%.5f")


def measure(cmd: list[str], **kw) -> dict:
    """Wall time and peak RSS (MiB) of one process, from its own rusage."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/automlp-bench-predict"))
    args = ap.parse_args()
    wd = args.workdir
    wd.mkdir(parents=True, exist_ok=True)

    train = wd / "train.csv"
    synth(20_000, seed=1).to_csv(train, index=False, float_format="%.5f")
    (wd / "spec.yaml").write_text(
        "data: {path: train.csv, target: y}\n"
        "space: {depth: 2, width: 64, lr: 0.003, batch_size: 256, max_epochs: 3}\n"
        "study: {name: bench_predict, n_trials: 1}\n"
        "output: {dir: studies}\n")
    subprocess.run([AUTOMLP, "search", "spec.yaml", "-q"], cwd=wd, check=True, capture_output=True)
    model = wd / "studies" / "bench_predict" / "model"

    big = wd / f"big_{args.rows}.csv"
    if not big.exists():
        t = time.perf_counter()
        write_big(big, args.rows)
        print(f"wrote {big} ({big.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)

    small = wd / f"big_{args.rows // 5}.csv"  # the first fifth: peak memory must not depend on the file size
    if not small.exists():
        with open(big) as f, open(small, "w") as g:
            for _, line in zip(range(args.rows // 5 + 1), f):
                g.write(line)

    py = sys.executable
    whole = ("import sys, pandas as pd, automlp; p = automlp.load(sys.argv[1]); "
             "df = pd.read_csv(sys.argv[2], dtype={f'c{j}': str for j in range(5)}); p.predict_proba(df)")
    runs = {
        "automlp predict (chunks of 100,000)": [AUTOMLP, "predict", str(model), str(big), "-o", str(wd / "out.csv")],
        "automlp predict (chunks of 10,000)": [AUTOMLP, "predict", str(model), str(big), "-o", str(wd / "out.csv"),
                                               "--chunk-rows", "10000"],
        f"automlp predict, first {args.rows // 5:,} rows only": [AUTOMLP, "predict", str(model), str(small), "-o",
                                                              str(wd / "out_small.csv")],
        "baseline: whole file, then predict_proba": [py, "-c", whole, str(model), str(big)],
        "baseline: pandas.read_csv only": [py, "-c", "import sys, pandas as pd; pd.read_csv(sys.argv[1])", str(big)],
    }
    results = {}
    for name, cmd in runs.items():
        r = measure(cmd)
        r["rows_per_s"] = round((args.rows // 5 if "first" in name else args.rows) / r["wall_s"])
        results[name] = r
        print(f"{name:46s} {r['wall_s']:7.2f} s  {r['rows_per_s']:>9,} rows/s  peak RSS {r['peak_rss_mib']:7.1f} MiB")
    ref = results["automlp predict (chunks of 100,000)"]
    for name, r in results.items():
        print(f"  {name}: time x{r['wall_s'] / ref['wall_s']:.2f}, memory x{r['peak_rss_mib'] / ref['peak_rss_mib']:.2f} "
              "of automlp predict (100,000)")
    out_rows = sum(1 for _ in open(wd / "out.csv")) - 1
    assert out_rows == args.rows, out_rows
    print(json.dumps({"rows": args.rows, "features": N_NUM + N_CAT, "cpus": os.cpu_count(),
                      "load_avg": os.getloadavg(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
