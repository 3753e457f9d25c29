"""The blocks through a whole study: searched, exported, and served by `automlp predict`, `automlp.load` and the
TorchScript-only reader with the study's own predictions; the portfolio's trials first."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import automlp
from automlp.cli import app
from automlp.data import prepare_data
from automlp.metrics import score_all
from automlp.spec import load_spec

from conftest import EXAMPLE_DATA, write_spec
from test_portfolio import BLOCKS_SPACE

REPO = Path(__file__).resolve().parents[1]
SERVE = REPO / "examples" / "serve_torchscript.py"
BLOCKS = {
    "periodic_quantile": {"numeric_preprocessing": "quantile", "embedding": "periodic", "arch": "mlp",
                          "feature_scaling": False},
    "ple_tabm_mini_robust": {"numeric_preprocessing": "robust_clip", "embedding": "piecewise_linear",
                             "arch": "tabm_mini", "feature_scaling": True, "n_bins": 8},
    "tabm_standard": {"numeric_preprocessing": "standard", "embedding": "none", "arch": "tabm",
                      "feature_scaling": False},
}


@pytest.fixture(scope="module", params=list(BLOCKS))
def study(request, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp(request.param)
    spec = {"data": {"path": str(EXAMPLE_DATA / "auto_mpg.csv"), "target": "mpg", "drop": ["car_name"],
                     "categorical": ["origin"], "task": "regression", "split_seed": 3},
            "space": {"depth": 1, "width": 16, "max_epochs": 4, "k_ensemble": 3, "d_embedding": 4,
                      "optimizer": "adamw", **BLOCKS[request.param]},
            "training": {"threads": 1},
            "study": {"name": "mpg", "n_trials": 1, "metric": "r2", "portfolio": False, "final": "best"},
            "output": {"dir": str(root / "studies")}}
    path = write_spec(root / "mpg.yaml", spec)
    r = CliRunner().invoke(app, ["search", str(path), "-q", "--no-report"])
    assert r.exit_code == 0, r.output
    return path, BLOCKS[request.param]


@pytest.mark.slow
def test_every_block_serves_the_studys_predictions(study):
    path, blocks = study
    spec = load_spec(path)
    model_dir = spec.study_dir / "model"
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["architecture"]["blocks"]["embedding"] == blocks["embedding"]
    assert json.loads((model_dir / "preprocessing.json").read_text())["numeric"]["method"] == \
        blocks["numeric_preprocessing"]
    data = prepare_data(spec.data, spec.study.seed, numeric=blocks["numeric_preprocessing"])
    predictor = automlp.load(model_dir)
    pred = predictor.predict(data.raw_test)
    # the study's test score is the one the exported model gets from the raw rows
    scaled = (pred - data.target_mean) / data.target_std
    assert score_all("regression", data.y_test, scaled[:, None], data.target_mean, data.target_std)["r2"] == \
        pytest.approx(meta["metrics"]["test"]["r2"], abs=1e-5)
    scripted = torch.jit.load(str(model_dir / "model.torchscript.pt"))
    with torch.no_grad():
        direct = scripted(torch.as_tensor(data.X_test)).numpy()[:, 0] * data.target_std + data.target_mean
    assert np.allclose(pred, direct, rtol=1e-5, atol=1e-4)
    # the TorchScript-only reader, without automlp importable
    code = ("import runpy, sys; sys.modules['automlp'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, str(SERVE), str(model_dir), str(spec.data.path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    served = pd.read_csv(io.StringIO(r.stdout))["prediction"].to_numpy()
    assert np.allclose(served, predictor.predict(pd.read_csv(spec.data.path, na_values=["?"],
                                                             skipinitialspace=True)), rtol=1e-5, atol=1e-4)
    out = path.parent / "pred.csv"
    r = CliRunner().invoke(app, ["predict", str(model_dir), str(spec.data.path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert np.allclose(pd.read_csv(out)["prediction"].to_numpy(), served, rtol=1e-5, atol=1e-4)


def test_a_new_study_starts_with_the_portfolio(tmp_path):
    space = {**BLOCKS_SPACE, "max_epochs": 2, "k_ensemble": 2, "width": 16}
    spec = {"data": {"dataset": "sklearn:iris"}, "space": space,
            "training": {"threads": 1}, "study": {"name": "iris", "n_trials": 4, "metric": "accuracy", "portfolio": True},
            "output": {"dir": str(tmp_path / "studies")}}
    path = write_spec(tmp_path / "iris.yaml", spec)
    r = CliRunner().invoke(app, ["search", str(path), "-q", "--no-report", "--no-export"])
    assert r.exit_code == 0, r.output
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "studies" / "iris" / "study.journal")))
    trials = optuna.load_study(study_name="iris", storage=storage).trials
    assert [t.user_attrs.get("portfolio") for t in trials] == ["realmlp", "tabm_mini_ple", "mlp", None]
    realmlp = trials[0].params
    assert realmlp["embedding"] == "periodic" and realmlp["width"] == 16 and realmlp["label_smoothing"] == 0.1
    assert trials[1].params["arch"] == "tabm_mini" and trials[1].params["k_ensemble"] == 2
