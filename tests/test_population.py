"""The population trainer against plain PyTorch: same weights and batches give the same numbers."""

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from automlp.model import ACTIVATIONS
from automlp.population.loop import LoopConfig, StackTrainer
from automlp.population.optim import StackedOptimizer
from automlp.population.stack import ACTIVATION_FNS, PopulationMLP, member_losses
from automlp.train import TrainConfig, make_optimizer


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
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], n_out))


def accuracy_on(y):
    y = y.numpy()
    return lambda outputs: float((outputs.argmax(-1) == y).mean())


def batches(n, bs, n_steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    return [perm[(i * bs) % n : (i * bs) % n + bs] for i in range(n_steps)]


def test_init_matches_nn_linear_default():
    net = PopulationMLP(64, 10, [(32, 16), (8, 24)], "relu")
    for k, widths in enumerate(net.member_widths):
        net.init_member(k, seed=100 + k)
        ref = plain_mlp(64, widths, 10, "relu", seed=100 + k)
        out = net.export_member(k, plain_mlp(64, widths, 10, "relu", seed=0))
        for a, b in zip(ref.state_dict().values(), out.state_dict().values()):
            assert torch.equal(a, b)


@pytest.mark.parametrize("activation", sorted(ACTIVATION_FNS))
def test_masked_widths_train_like_unpadded_nets(digits, activation):
    X, y = digits
    widths = [(16, 8), (32, 32), (8, 24)]
    net = PopulationMLP(64, 10, widths, activation)
    refs = [plain_mlp(64, w, 10, activation, seed=k) for k, w in enumerate(widths)]
    for k, ref in enumerate(refs):
        net.load_member(k, ref)
    lrs = [1e-3, 3e-3, 1e-2]
    opt = StackedOptimizer(net.flat, net.flat_grad, "adam", lr=lrs, alpha=[0.0] * 3)
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
    """Reference: automlp.train.make_optimizer (torch.optim, L2 on weights only) on each member alone."""
    X, y = digits
    hps = [
        {"lr": 1e-2, "alpha": 1e-3, "momentum": 0.9, "nesterov": True},
        {"lr": 3e-3, "alpha": 0.0, "momentum": 0.5, "nesterov": False},
        {"lr": 5e-2, "alpha": 1e-1, "momentum": 0.0, "nesterov": False},
    ]
    net = PopulationMLP(64, 10, [(24,)] * 3, "tanh")
    refs = [plain_mlp(64, (24,), 10, "tanh", seed=k) for k in range(3)]
    for k, ref in enumerate(refs):
        net.load_member(k, ref)
    opt = StackedOptimizer(
        net.flat, net.flat_grad, family, lr=[h["lr"] for h in hps], alpha=[h["alpha"] for h in hps],
        momentum=[h["momentum"] for h in hps], nesterov=[h["nesterov"] for h in hps], fused=fused,
        n_decay=net.n_weights,
    )  # fmt: skip
    ref_opts = [make_optimizer(r, TrainConfig(optimizer=family, **h), torch.device("cpu")) for r, h in zip(refs, hps)]
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
    net = PopulationMLP(64, 10, [(32,), (32,)], "relu")
    net.init_member(0, 0)
    net.init_member(1, 1)
    before = net.flat.clone()
    opt = StackedOptimizer(net.flat, net.flat_grad, family, lr=[0.0, 1e-2], alpha=[1e-2, 1e-2], momentum=[0.9, 0.9],
                           fused=fused)  # fmt: skip
    for idx in batches(len(X), 64, 5):
        opt.zero_grad()
        member_losses(net(X[idx]), y[idx], "classification").sum().backward()
        opt.step()
    assert torch.equal(net.flat[0], before[0])
    assert not torch.allclose(net.flat[1], before[1])


def _fit(X, y, prune_at, compact_below, dropout):
    widths = [(32, 16), (16, 16), (32, 8), (8, 32)]
    net = PopulationMLP(64, 10, widths, "logistic", dropout=dropout)
    for k in range(len(widths)):
        net.init_member(k, seed=k)
    opt = StackedOptimizer(net.flat, net.flat_grad, "adam", lr=[1e-2, 3e-3, 1e-3, 5e-3], alpha=[0.0, 1e-4, 0.0, 1e-3])
    cfg = LoopConfig(
        batch_size=50, max_epochs=5, task="classification", score_fn=accuracy_on(y[300:]), compact_below=compact_below,
    )  # fmt: skip
    trainer = StackTrainer(net, opt, cfg)

    def on_epoch(epoch, scores):
        return {m for m, e in prune_at.items() if e == epoch}

    return trainer.fit(X[:300], y[:300], X[300:], y[300:], on_epoch=on_epoch), trainer


@pytest.mark.parametrize("compact_below, dropout", [(0.0, [0.2, 0.1, 0.3, 0.0]), (0.75, [0.0] * 4)])
def test_pruning_one_member_leaves_the_others_unchanged(digits, compact_below, dropout):
    X, y = digits
    base, _ = _fit(X, y, {}, compact_below, dropout)
    pruned, trainer = _fit(X, y, {1: 2, 3: 3}, compact_below, dropout)
    assert [r.stop_reason for r in pruned] == ["max_epochs", "pruned", "max_epochs", "pruned"]
    assert [r.n_epochs for r in pruned] == [5, 2, 5, 3]
    if compact_below:
        assert trainer.net.n_members == 2  # compacted once two of four were gone
    for k in (0, 2):
        for key in ("train_loss", "val_loss"):
            assert pruned[k].history[key] == pytest.approx(base[k].history[key], rel=1e-6)
    assert pruned[1].history["val_loss"] == pytest.approx(base[1].history["val_loss"][:2], rel=1e-6)


@pytest.mark.parametrize(
    "family, schedule, widths",
    [("adam", "invscaling", (32, 16)), ("sgd", "cosine", (24,)), ("adamw", "adaptive", (16, 16))],
)
def test_a_member_trains_like_the_sequential_trainer(digits, family, schedule, widths):
    """With the stack's batch order seeded by member 0's seed, member 0 follows automlp.train.train exactly."""
    from automlp.data import TrainData
    from automlp.model import MLPConfig, build_mlp
    from automlp.population.train import train_population
    from automlp.train import seed_everything, train

    X, y = digits
    data = TrainData(X[:300], y[:300], X[300:], y[300:], "classification", 10, torch.device("cpu"))
    base = dict(optimizer=family, batch_size=50, max_epochs=6, lr_schedule=schedule, patience=3, min_delta=1e-3,
                momentum=0.9, nesterov=True, power_t=0.5)  # fmt: skip
    mlps = [MLPConfig(64, 10, widths, "silu"), MLPConfig(64, 10, tuple(w // 2 for w in widths), "silu"),
            MLPConfig(64, 10, widths, "silu")]  # fmt: skip
    tcs = [TrainConfig(lr=0.02, alpha=1e-3, seed=7, **base), TrainConfig(lr=0.005, alpha=0.0, seed=8, **base),
           TrainConfig(lr=0.05, alpha=1e-2, seed=9, **base)]  # fmt: skip
    (model, got), *_ = train_population(mlps, tcs, data)
    seed_everything(7)
    ref_model = build_mlp(mlps[0])
    ref = train(ref_model, data, tcs[0])
    for key in ("train_loss", "val_loss", "val_score"):
        assert got.history[key] == pytest.approx(ref.history[key], rel=1e-4, abs=1e-5)
    assert (got.best_epoch, got.n_epochs, got.stop_reason) == (ref.best_epoch, ref.n_epochs, ref.stop_reason)
    for a, b in zip(ref_model.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
