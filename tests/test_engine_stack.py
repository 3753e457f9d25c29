"""The stacked net and optimizer against plain PyTorch: same weights and batches give the same numbers."""

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from automlp.data import TrainData
from automlp.engine import Member, TrainConfig, train_stack
from automlp.engine.activations import ACTIVATIONS, activation_module
from automlp.engine.config import member_losses
from automlp.engine.nets import StackedMLP
from automlp.engine.optim import StackedOptimizer, make_torch_optimizer
from automlp.model import MLPConfig


pytestmark = pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout contract")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    return X[:400], torch.tensor(y[:400])


def plain_mlp(n_in, widths, n_out, activation, seed):
    torch.manual_seed(seed)
    layers, sizes = [], [n_in, *widths]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation_module(activation)]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], n_out))


def accuracy_on(y):
    y = y.numpy()
    return lambda outputs: float((outputs.argmax(-1) == y).mean())


def batches(n, bs, n_steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    return [perm[(i * bs) % n : (i * bs) % n + bs] for i in range(n_steps)]


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_masked_widths_train_like_unpadded_nets(digits, activation):
    X, y = digits
    widths = [(16, 8), (32, 32), (8, 24)]
    net = StackedMLP(64, 10, widths, activation)
    refs = [plain_mlp(64, w, 10, activation, seed=k) for k, w in enumerate(widths)]
    for k, ref in enumerate(refs):
        net.load_member(k, ref)
    lrs = [1e-3, 3e-3, 1e-2]
    opt = StackedOptimizer(net.flat, net.flat_grad, "adam", {"lr": lrs})
    ref_opts = [torch.optim.Adam(r.parameters(), lr=lr) for r, lr in zip(refs, lrs)]
    for idx in batches(len(X), 32, 6):
        losses = member_losses(net(X[idx]), y[idx], "classification")
        opt.zero_grad()
        losses.sum().backward()
        opt.step()
        for k, (ref, ref_opt) in enumerate(zip(refs, ref_opts)):
            ref_loss = nn.functional.cross_entropy(ref(X[idx]), y[idx])
            ref_opt.zero_grad()
            ref_loss.backward()
            ref_opt.step()
            assert losses[k].item() == pytest.approx(ref_loss.item(), rel=1e-4, abs=1e-5)
    for k, (ref, w) in enumerate(zip(refs, widths)):
        got = net.export_member(k, plain_mlp(64, w, 10, activation, seed=0))
        for a, b in zip(ref.parameters(), got.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # padded units never move away from zero
    full = net.flat.clone()
    for k in range(3):
        net.load_member(k, net.export_member(k, plain_mlp(64, widths[k], 10, activation, seed=0)))
    torch.testing.assert_close(net.flat, full, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "batched"])
def test_optimizer_math_equals_torch_optim_per_member(digits, family, fused):
    """Reference: torch.optim (make_torch_optimizer, L2 on weights only) on each member alone."""
    X, y = digits
    hps = [
        {"lr": 1e-2, "alpha": 1e-3, "momentum": 0.9, "nesterov": True},
        {"lr": 3e-3, "alpha": 0.0, "momentum": 0.5, "nesterov": False},
        {"lr": 5e-2, "alpha": 1e-1, "momentum": 0.0, "nesterov": False},
    ]
    net = StackedMLP(64, 10, [(24,)] * 3, "tanh")
    refs = [plain_mlp(64, (24,), 10, "tanh", seed=k) for k in range(3)]
    for k, ref in enumerate(refs):
        net.load_member(k, ref)
    opt = StackedOptimizer(
        net.flat, net.flat_grad, family, {name: [h[name] for h in hps] for name in hps[0]}, fused=fused,
        n_decay=net.n_weights,
    )  # fmt: skip
    ref_opts = [make_torch_optimizer(r, TrainConfig(optimizer=family, **h), torch.device("cpu")) for r, h in zip(refs, hps)]
    for idx in batches(len(X), 64, 10):
        opt.zero_grad()
        member_losses(net(X[idx]), y[idx], "classification").sum().backward()
        opt.step()
        for ref, ref_opt in zip(refs, ref_opts):
            ref_opt.zero_grad()
            nn.functional.cross_entropy(ref(X[idx]), y[idx]).backward()
            ref_opt.step()
    for k, ref in enumerate(refs):
        got = net.export_member(k, plain_mlp(64, (24,), 10, "tanh", seed=0))
        for a, b in zip(ref.parameters(), got.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "batched"])
def test_member_with_lr_zero_does_not_move(digits, family, fused):
    X, y = digits
    net = StackedMLP(64, 10, [(32,), (32,)], "relu")
    net.load_member(0, plain_mlp(64, (32,), 10, "relu", seed=0))
    net.load_member(1, plain_mlp(64, (32,), 10, "relu", seed=1))
    before = net.flat.clone()
    opt = StackedOptimizer(net.flat, net.flat_grad, family, {"lr": [0.0, 1e-2], "alpha": [1e-2, 1e-2],
                                                             "momentum": [0.9, 0.9]}, fused=fused)  # fmt: skip
    for idx in batches(len(X), 64, 5):
        opt.zero_grad()
        member_losses(net(X[idx]), y[idx], "classification").sum().backward()
        opt.step()
    assert torch.equal(net.flat[0], before[0])
    assert not torch.allclose(net.flat[1], before[1])


def _fit(X, y, prune_at, dropout):
    widths = [(32, 16), (16, 16), (32, 8), (8, 32)]
    data = TrainData(X[:300], y[:300], X[300:], y[300:], "classification", 10, torch.device("cpu"))
    members = [Member(k, MLPConfig(64, 10, w, "logistic", d),
                      TrainConfig(lr=lr, alpha=a, batch_size=50, max_epochs=5, patience=None, seed=k))
               for k, (w, d, lr, a) in enumerate(zip(widths, dropout, [1e-2, 3e-3, 1e-3, 5e-3], [0.0, 1e-4, 0.0, 1e-3]))]

    def on_epoch(reports):
        return {r.tag for r in reports if prune_at.get(r.tag) == r.epoch}

    outcomes = {o.tag: o.result for o in train_stack(members, data, on_epoch=on_epoch)}
    return [outcomes[k] for k in range(4)]


@pytest.mark.parametrize("prune_at, dropout", [({1: 2}, [0.2, 0.1, 0.3, 0.0]), ({1: 2, 3: 3}, [0.0] * 4)],
                         ids=["frozen", "compacted"])
def test_pruning_one_member_leaves_the_others_unchanged(digits, prune_at, dropout):
    """A pruned member is frozen in place (its row stays; dropout draws of the others unchanged) and, once half
    the stack is empty, compacted away: either way the others train exactly as before."""
    X, y = digits
    base = _fit(X, y, {}, dropout)
    pruned = _fit(X, y, prune_at, dropout)
    assert [r.stop_reason for r in pruned] == ["pruned" if k in prune_at else "max_epochs" for k in range(4)]
    assert [r.n_epochs for r in pruned] == [prune_at.get(k, 5) for k in range(4)]
    for k in (0, 2):
        for key in ("train_loss", "val_loss"):
            assert pruned[k].history[key] == pytest.approx(base[k].history[key], rel=1e-6)
    assert pruned[1].history["val_loss"] == pytest.approx(base[1].history["val_loss"][:2], rel=1e-6)


@pytest.mark.parametrize(
    "family, schedule, widths",
    [("adam", "invscaling", (32, 16)), ("sgd", "cosine", (24,)), ("adamw", "adaptive", (16, 16))],
)
def test_a_member_trains_like_the_sequential_trainer(digits, family, schedule, widths):
    """Member 0 shares the stack's batch order, seeded by its own seed: it follows `train` (K = 1) exactly."""
    from automlp.engine import seed_everything, train
    from automlp.model import build_mlp

    X, y = digits
    data = TrainData(X[:300], y[:300], X[300:], y[300:], "classification", 10, torch.device("cpu"))
    base = dict(optimizer=family, batch_size=50, max_epochs=6, lr_schedule=schedule, patience=3, min_delta=1e-3,
                momentum=0.9, nesterov=True, power_t=0.5)  # fmt: skip
    mlps = [MLPConfig(64, 10, widths, "silu"), MLPConfig(64, 10, tuple(w // 2 for w in widths), "silu"),
            MLPConfig(64, 10, widths, "silu")]  # fmt: skip
    tcs = [TrainConfig(lr=0.02, alpha=1e-3, seed=7, **base), TrainConfig(lr=0.005, alpha=0.0, seed=8, **base),
           TrainConfig(lr=0.05, alpha=1e-2, seed=9, **base)]  # fmt: skip
    outcomes = train_stack([Member(k, m, c) for k, (m, c) in enumerate(zip(mlps, tcs))], data)
    got = next(o for o in outcomes if o.tag == 0)
    seed_everything(7)
    ref_model = build_mlp(mlps[0])
    ref = train(ref_model, data, tcs[0])
    for key in ("train_loss", "val_loss", "val_score"):
        assert got.result.history[key] == pytest.approx(ref.history[key], rel=1e-4, abs=1e-5)
    r = got.result
    assert (r.best_epoch, r.n_epochs, r.stop_reason) == (ref.best_epoch, ref.n_epochs, ref.stop_reason)
    for a, b in zip(ref_model.state_dict().values(), got.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
