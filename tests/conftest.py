"""Shared fixtures: the installed console script, the real data sets, small spec writers.

Every data set a test reads is in the repository: small real subsets in tests/data (see its README) and the
example data in search_spaces/data. Tests never read the benchmarks' data folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
EXAMPLE_DATA = REPO / "search_spaces" / "data"
AUTOMLP = str(Path(sys.executable).with_name("automlp"))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """Run the installed `automlp` console script as a user would."""
    return subprocess.run([AUTOMLP, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def tiny_iris_spec(tmp_path: Path) -> Path:
    """A spec that runs a handful of short trials on iris in a few seconds."""
    return write_spec(tmp_path / "iris.yaml", {
        "data": {"dataset": "sklearn:iris", "split_seed": 3},
        "space": {"depth": [1, 2], "width": {"low": 8, "high": 32}, "optimizer": ["adam", "lbfgs"],
                  "lr": {"low": 1e-3, "high": 3e-2, "log": True}, "batch_size": [16, 32], "max_epochs": 30},
        "training": {"early_stopping": {"patience": 5}},
        "study": {"name": "iris_tiny", "n_trials": 4, "seed": 1,
                  "pruner": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 3}},
        "output": {"dir": str(tmp_path / "studies")},
    })
