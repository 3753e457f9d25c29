"""Greedy ensemble selection (a pure function over prediction arrays), the blend, and the blending network."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from automlp.ensemble import EnsembleNet, blend, select_ensemble
from automlp.metrics import score, softmax
from automlp.model import MLPConfig, build_mlp


def _noisy_candidates(task: str, seed: int, n_rows: int = 120, n: int = 8):
    """Candidates of different quality: the truth plus noise of growing scale."""
    rng = np.random.default_rng(seed)
    if task == "classification":
        y = rng.integers(0, 3, n_rows)
        truth = np.eye(3)[y] * 2.0
        return y, [truth + rng.normal(0, 1.0 + 0.3 * i, truth.shape) for i in range(n)]
    y = rng.normal(size=n_rows)
    return y, [(y + rng.normal(0, 0.5 + 0.2 * i, n_rows)).reshape(-1, 1) for i in range(n)]


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "roc_auc", "rmse", "r2", "mae"])
@pytest.mark.parametrize("seed", range(4))
def test_selection_never_scores_worse_than_the_best_single_candidate(metric, seed):
    task = "classification" if metric in ("accuracy", "log_loss", "roc_auc") else "regression"
    y, cands = _noisy_candidates(task, seed)
    sel = select_ensemble(cands, y, metric, n_rounds=15)
    singles = [score(metric, y, c) for c in cands]
    best = max(singles) if metric in ("accuracy", "roc_auc", "r2") else min(singles)
    # the kept ensemble's score is what its weights give, and it is at least the best single candidate's
    assert sel.score == pytest.approx(score(metric, y, blend(cands, sel.weights, task)), rel=1e-9, abs=1e-12)
    assert (sel.score >= best) if metric in ("accuracy", "roc_auc", "r2") else (sel.score <= best)
    assert sum(sel.weights) == pytest.approx(1.0) and sum(sel.counts) == sel.n_rounds <= 15
    assert singles[sel.best_single] == best


def test_selection_finds_members_whose_errors_cancel():
    # y = 0: candidates +1, -1 and +0.5. The best single is +0.5 (rmse 0.5); two parts +0.5 and one part -1
    # average to exactly 0, which greedy selection reaches in round 3 and keeps
    y = np.zeros(4)
    cands = [np.full((4, 1), 1.0), np.full((4, 1), -1.0), np.full((4, 1), 0.5)]
    sel = select_ensemble(cands, y, "rmse", n_rounds=10)
    assert sel.best_single == 2
    assert sel.counts == (0, 1, 2) and sel.n_rounds == 3
    assert sel.weights == pytest.approx((0.0, 1 / 3, 2 / 3))
    assert sel.score == pytest.approx(0.0, abs=1e-12) and sel.members == [1, 2]


def test_ties_go_to_the_earlier_candidate_then_the_lower_loss_then_the_shorter_ensemble():
    y = np.array([0, 1, 0, 1])
    a = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    # identical candidates: the first listed wins every round, and one round is kept (adding copies changes
    # nothing, so the earlier round keeps the tie)
    sel = select_ensemble([a, a.copy(), a.copy()], y, "accuracy", n_rounds=5)
    assert sel.counts == (1, 0, 0) and sel.n_rounds == 1 and sel.trajectory == (1.0,) * 5
    # equal accuracy, lower log-loss: the more confident correct candidate wins although it comes second
    sel = select_ensemble([a, 3 * a], y, "accuracy", n_rounds=1)
    assert sel.counts == (0, 1)
    # and the selection repeats exactly
    y2, cands = _noisy_candidates("classification", 7)
    assert select_ensemble(cands, y2, "accuracy") == select_ensemble(cands, y2, "accuracy")


def test_blend_averages_probabilities_not_logits():
    z1 = np.array([[4.0, 0.0]])
    z2 = np.array([[0.0, 1.0]])
    out = blend([z1, z2], [3, 1], "classification")
    expected = 0.75 * softmax(z1) + 0.25 * softmax(z2)
    assert np.allclose(softmax(out), expected) and np.allclose(np.exp(out), expected)
    assert np.allclose(blend([z1, z2], [1, 1], "regression"), (z1 + z2) / 2)
    with pytest.raises(ValueError, match="one non-negative weight per member"):
        blend([z1, z2], [1], "regression")


def test_selection_refuses_candidates_of_different_rows():
    with pytest.raises(ValueError, match="same 3 rows"):
        select_ensemble([np.zeros((3, 1)), np.zeros((4, 1))], np.zeros(3), "rmse")


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_ensemble_net_computes_the_blend_in_torch_and_torchscript(task):
    torch.manual_seed(0)
    n_out = 3 if task == "classification" else 1
    members = [build_mlp(MLPConfig(5, n_out, w, "relu")).eval() for w in ((8,), (16, 4), ())]
    weights = [0.5, 0.25, 0.25]
    net = EnsembleNet(members, weights, task).eval()
    x = torch.randn(40, 5)
    with torch.no_grad():
        each = [m(x).numpy() for m in members]
        mine = net(x).numpy()
    reference = blend(each, weights, task)
    if task == "classification":
        assert np.allclose(softmax(mine), softmax(reference), atol=1e-6)
        assert np.allclose(np.exp(mine).sum(axis=1), 1.0, atol=1e-5)  # log-probabilities
    else:
        assert np.allclose(mine, reference, atol=1e-6)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buf)
    buf.seek(0)
    scripted = torch.jit.load(buf)
    with torch.no_grad():
        assert np.allclose(scripted(x).numpy(), mine, atol=1e-6)


def test_ensemble_net_refuses_a_zero_weight():
    with pytest.raises(ValueError, match="one positive weight per member"):
        EnsembleNet([build_mlp(MLPConfig(2, 1, ()))], [0.0], "regression")
