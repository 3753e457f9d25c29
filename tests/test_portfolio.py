"""The portfolio: proven configurations first, clipped to the user's space, skipped with a note outside it."""

from __future__ import annotations

import optuna

from automlp.portfolio import enqueue_portfolio, portfolio_params
from automlp.spec import validate_spec_dict


# the space of the README's "Beyond the plain MLP" section, which holds every ingredient the portfolio uses
BLOCKS_SPACE = {"optimizer": ["adam", "adamw"], "activation": ["relu", "silu"], "dropout": {"low": 0.0, "high": 0.3},
                "batch_size": [32, 64, 128, 256], "lr_schedule": ["constant", "cosine", "coslog4"],
                "beta2": {"low": 0.9, "high": 0.999}, "label_smoothing": {"low": 0.0, "high": 0.1},
                "numeric_preprocessing": ["standard", "quantile", "robust_clip"],
                "embedding": ["none", "periodic", "piecewise_linear"], "feature_scaling": [False, True],
                "arch": ["mlp", "tabm_mini"]}


def _spec(space: dict | None = None, **study) -> object:
    study = {"portfolio": True, **study}
    return validate_spec_dict({"data": {"dataset": "sklearn:iris"}, "space": {**BLOCKS_SPACE, **(space or {})},
                               "study": study})


def test_default_space_takes_every_entry_clipped_to_its_ranges():
    entries, notes = portfolio_params(_spec(), "accuracy")
    assert notes == [] and [name for name, _ in entries] == ["realmlp", "tabm_mini_ple", "mlp"]
    realmlp, tabm, mlp = (params for _, params in entries)
    assert realmlp["lr"] == 0.03 and realmlp["alpha"] == 0.01  # above the default ranges: their upper bounds
    assert realmlp["label_smoothing"] == 0.1 and realmlp["embedding"] == "periodic"
    assert realmlp["frequency_init_scale"] == 0.1 and "n_bins" not in realmlp  # conditional parameters
    assert tabm["width"] == 256 and tabm["arch"] == "tabm_mini" and tabm["n_bins"] == 16
    assert mlp["batch_size"] == 256  # 200 is not among 32..256: the nearest choice by ratio


def test_small_data_gets_smaller_batches():
    entries, _ = portfolio_params(_spec(), "accuracy", n_train=1000)
    assert [params["batch_size"] for _, params in entries] == [64, 64, 64]  # 1000 / 16 = 62: the nearest choice


def test_label_smoothing_is_left_out_for_probability_metrics():
    entries, _ = portfolio_params(_spec(), "roc_auc")
    assert all("label_smoothing" not in params for _, params in entries)


def test_an_entry_outside_the_space_is_skipped_with_a_note():
    spec = _spec({"arch": "mlp", "embedding": ["none", "periodic"], "width": 64, "depth": [1, 2],
                  "width_mode": "per_layer", "numeric_preprocessing": ["standard", "robust_clip"]})
    entries, notes = portfolio_params(spec, "accuracy")
    assert notes == ["portfolio entry 'tabm_mini_ple' skipped: space.numeric_preprocessing does not admit "
                     "'quantile'"]
    realmlp = dict(entries)["realmlp"]
    assert realmlp["depth"] == 2 and realmlp["width_0"] == realmlp["width_1"] == 64 and "width" not in realmlp
    assert dict(entries)["mlp"]["width_0"] == 64


def test_portfolio_trials_come_first_and_only_in_a_new_study():
    spec = _spec()
    study = optuna.create_study(direction="maximize")
    assert enqueue_portfolio(study, spec, "accuracy") == []
    first = study.ask()
    assert first.user_attrs["portfolio"] == "realmlp"
    assert first.suggest_categorical("embedding", ["none", "periodic", "piecewise_linear"]) == "periodic"
    study.tell(first, 0.5)
    enqueue_portfolio(study, spec, "accuracy")  # resumed: nothing more is queued
    names = [t.user_attrs.get("portfolio") for t in study.get_trials(deepcopy=False)]
    assert names == ["realmlp", "tabm_mini_ple", "mlp"]
    off = optuna.create_study()
    assert enqueue_portfolio(off, _spec(portfolio=False), "accuracy") == [] and off.get_trials() == []
