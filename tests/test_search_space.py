"""The space: STRUCTURAL (what refills are enqueued with) must be exactly what the engine's stack_key compares,
and `params_of` must turn stored width params back into the widths the trial trained."""

from __future__ import annotations

import optuna
import pytest

from automlp.data import prepare_data
from automlp.engine import stack_key
from automlp.search.space import configs_from_params, params_of, structural_params, suggest_params
from automlp.spec import validate_spec_dict

optuna.logging.set_verbosity(optuna.logging.WARNING)


BLOCKS = {"numeric_preprocessing": ["standard", "quantile"], "embedding": ["none", "periodic", "piecewise_linear"],
          "feature_scaling": [False, True], "arch": ["mlp", "tabm_mini"], "d_embedding": [8, 16],
          "k_ensemble": [4, 8], "label_smoothing": [0.0, 0.1]}


def _spec(tmp_path, width_mode="shared", blocks=False):
    return validate_spec_dict({
        "data": {"dataset": "sklearn:iris"},
        "space": {"depth": [1, 2, 3], "width": {"low": 4, "high": 64}, "width_mode": width_mode,
                  "activation": ["relu", "tanh"], "optimizer": ["adam", "sgd", "adamw"], "batch_size": [16, 32],
                  "max_epochs": [5, 10], "dropout": {"low": 0.0, "high": 0.3}, "lr_schedule": ["constant", "cosine"],
                  **(BLOCKS if blocks else {})},
        "study": {"name": "space", "seed": 0},
        "output": {"dir": str(tmp_path)},
    })


@pytest.mark.parametrize("blocks", [False, True])
def test_trials_share_a_stack_key_exactly_when_they_share_the_structural_params(tmp_path, blocks):
    spec = _spec(tmp_path, blocks=blocks)
    data = prepare_data(spec.data, 0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(300 if blocks else 60):
        trial = study.ask()
        params = suggest_params(trial, spec, "accuracy")
        mlp, tc = configs_from_params(params, spec, data, "accuracy", 0)
        seen.append((tuple(sorted(structural_params(trial.params).items())), stack_key(mlp, tc)))
        study.tell(trial, 0.0)
    by_params, by_key = {}, {}
    for p, k in seen:
        by_params.setdefault(p, set()).add(k)
        if k is not None:  # None: trains alone (a plain net with label smoothing)
            by_key.setdefault(k, set()).add(p)
    assert all(len(keys) == 1 for keys in by_params.values())  # same structural params -> one stack key
    assert all(len(ps) == 1 for ps in by_key.values())  # one stack key -> the same structural params
    assert len(by_key) > 5
    if blocks:  # both kinds were drawn: plain nets (6-part keys) and nets of blocks (+ widths and blocks)
        assert any(len(k) == 8 for k in by_key) and any(len(k) == 6 for k in by_key)


def test_per_layer_widths_come_back_as_the_trial_trained_them(tmp_path):
    spec = _spec(tmp_path, width_mode="per_layer")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(10):
        trial = study.ask()
        params = suggest_params(trial, spec)
        study.tell(trial, 0.0)
        assert params_of(study.trials[-1])["widths"] == params["widths"]
        assert len(params["widths"]) == params["depth"]
