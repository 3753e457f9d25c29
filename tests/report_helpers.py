"""Shared by the report tests: run the installed `automlp` command, write specs and small data sets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

AUTOMLP = str(Path(sys.executable).parent / "automlp")
REPO = Path(__file__).resolve().parent.parent
# every figure the report draws, by div id
CLASSIFICATION_FIGS = ("learning-curves", "capacity-gap", "stability", "confusion-matrix")
REGRESSION_FIGS = ("learning-curves", "capacity-gap", "stability", "predicted-vs-actual", "residuals")
OPTUNA_FIGS = ("optimization-history", "param-importances", "parallel-coordinate", "slice", "intermediate-values",
               "timeline")


def automlp(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([AUTOMLP, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def invoke(*args: str, cwd: Path):
    """The same command in-process with Typer's CliRunner (no interpreter start-up: for the quick checks)."""
    import os

    from typer.testing import CliRunner

    from automlp.cli import app

    old = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_study(folder: Path, name: str, spec: dict, *extra: str) -> tuple[Path, subprocess.CompletedProcess]:
    """Write the spec, run `automlp search` on it, return the study folder and the finished process."""
    spec_path = write_spec(folder / f"{name}.yaml", spec)
    proc = automlp("search", str(spec_path), "-q", *extra, cwd=folder)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return folder / "studies" / spec["study"]["name"], proc


def facts(study_dir: Path) -> dict:
    return json.loads((study_dir / "report.json").read_text())


def friedman_csv(path: Path, n: int = 400, seed: int = 1) -> Path:
    """A small noisy regression set: 5 informative features (Friedman #1) and 5 of pure noise."""
    from sklearn.datasets import make_friedman1

    X, y = make_friedman1(n_samples=n, n_features=10, noise=1.0, random_state=seed)
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    df["y"] = y
    df.to_csv(path, index=False)
    return path


def hostile_csv(path: Path, n: int = 240, seed: int = 0) -> Path:
    """Two classes whose labels and one column name are HTML that would run if the report did not escape it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = np.where(X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=n) > 0,
                 "<img src=x onerror=\"window.__errors.push('xss')\">", "a & b <i>")
    df = pd.DataFrame(X, columns=["<b>col</b>", "x1", "x2", "x3"])
    df["label"] = y
    df.to_csv(path, index=False)
    return path
