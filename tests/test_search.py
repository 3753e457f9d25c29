"""The search module through its Python API: replay, conditional parameters, refusal of a changed space."""

from __future__ import annotations

import pytest
import torch

from automlp.data import to_tensors
from automlp.errors import StorageError
from automlp.search import run_search
from automlp.search.trial import replay, round_curve
from automlp.spec import validate_spec_dict


def small_spec(tmp_path, **space):
    return validate_spec_dict({
        "data": {"dataset": "sklearn:wine"},
        "space": {"depth": [1, 2], "width": {"low": 8, "high": 32}, "optimizer": ["adam", "sgd"],
                  "batch_size": 16, "max_epochs": 12, **space},
        "study": {"name": "wine", "n_trials": 3, "seed": 5, "pruner": "none"},
        "output": {"dir": str(tmp_path)},
    })


def test_best_trial_replays_with_the_same_curves(tmp_path):
    spec = small_spec(tmp_path)
    outcome = run_search(spec)
    best = outcome.study.best_trial
    run = replay(best, spec, outcome.data, to_tensors(outcome.data, torch.device("cpu")), outcome.metric)
    assert {k: round_curve(v) for k, v in run.result.history.items()} == best.user_attrs["curves"]
    assert run.result.best_val_score == pytest.approx(best.value)
    for t in outcome.study.trials:  # momentum and nesterov exist only in sgd trials
        assert ("momentum" in t.params) == (t.params["optimizer"] == "sgd")


def test_resuming_with_a_changed_space_is_refused(tmp_path):
    run_search(small_spec(tmp_path))
    with pytest.raises(StorageError) as e:
        run_search(small_spec(tmp_path, max_epochs=20))
    msg = str(e.value)
    assert "study 'wine'" in msg and "space.max_epochs" in msg and "12 -> 20" in msg
