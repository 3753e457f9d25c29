"""Reference oracle: the hand-written stack kernel (automlp.engine.kernel) must train each member exactly as that
member's own network trains under autograd and torch.optim, on the same weights, batches and dropout masks.

The oracle is K separate, unpadded nets (nn.Linear layers with the member's own widths, automlp.model's activation
modules) and K torch.optim optimizers, with L2 / weight decay on the weights only (a parameter group each). The
kernel holds the same members zero-padded to the widest in one flat (K, P) tensor, with per-member lr, betas, weight
decay, momentum, nesterov and dropout; after every step the per-member losses and the whole flat tensor (padding
included: it must stay exactly zero) must match.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from automlp.engine.kernel import ACTIVATIONS, StackKernel
from automlp.engine.activations import ACTIVATIONS as REGISTRY

WIDTHS = [(12, 8), (9, 8), (12, 5), (4, 3)]  # member 0 is the widest; the others are padded to (12, 8)
LR = [5e-3, 1e-2, 2e-3, 3e-2]
ALPHA = [0.0, 1e-2, 1e-3, 5e-2]
BETAS = [(0.9, 0.999), (0.8, 0.99), (0.95, 0.9), (0.5, 0.95)]
MOMENTUM = [0.9, 0.0, 0.5, 0.8]
NESTEROV = [True, False, False, True]
DROPOUT = [0.0, 0.2, 0.1, 0.3]
D, K, TOL = 7, len(WIDTHS), 2e-5
BATCHES = [16, 16, 16, 11, 16, 16]  # a short batch in the middle: a second set of work buffers


@pytest.fixture(autouse=True)
def _one_thread():
    # tensors of a few hundred floats: a second thread only adds hand-offs (seconds on a loaded machine)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Oracle:
    """K plain nets, each with its own torch.optim optimizer."""

    def __init__(self, activation, task, optimizer, n_out, seed=0, betas=BETAS):
        self.act, self.task = REGISTRY[activation].module(), task
        self.nets, self.opts = [], []
        for k, w in enumerate(WIDTHS):
            torch.manual_seed(seed + k)
            sizes = [D, *w, n_out]
            net = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
            groups = [{"params": [lin.weight for lin in net], "weight_decay": ALPHA[k]},
                      {"params": [lin.bias for lin in net], "weight_decay": 0.0}]  # fmt: skip
            opt = {"adam": lambda: torch.optim.Adam(groups, lr=LR[k], betas=betas[k]),
                   "adamw": lambda: torch.optim.AdamW(groups, lr=LR[k], betas=betas[k]),
                   "sgd": lambda: torch.optim.SGD(groups, lr=LR[k], momentum=MOMENTUM[k], nesterov=NESTEROV[k])}
            self.nets.append(net)
            self.opts.append(opt[optimizer]())

    def flat(self, sizes):
        """The members packed as the kernel holds them: weights (in, out) then biases, zero-padded."""
        flat = torch.zeros(K, sum(i * o + o for i, o in sizes))
        for k, net in enumerate(self.nets):
            off, boff = 0, sum(i * o for i, o in sizes)
            for lin, (i, o) in zip(net, sizes):
                flat[k, off:off + i * o].view(i, o)[: lin.in_features, : lin.out_features] = lin.weight.detach().T
                flat[k, boff:boff + lin.out_features] = lin.bias.detach()
                off, boff = off + i * o, boff + o
        return flat

    def step(self, k, x, y, noises, active=True):
        h = x
        for lin, noise in zip(self.nets[k][:-1], noises):
            h = self.act(lin(h))
            if noise is not None:
                h = h * noise[k, :, : lin.out_features]
        out = self.nets[k][-1](h)
        loss = F.cross_entropy(out, y) if self.task == "classification" else F.mse_loss(out, y)
        if active:
            self.opts[k].zero_grad()
            loss.backward()
            self.opts[k].step()
        return loss.item()


def _batch(task, b, own, n_out, gen):
    shape = (K, b, D) if own else (b, D)
    x = torch.randn(*shape, generator=gen)
    if task == "classification":
        return x, torch.randint(0, n_out, shape[:-1], generator=gen)
    return x, torch.randn(*shape[:-1], n_out, generator=gen)


def _masks(b, gen, sizes, dropout):
    """The dropout masks the kernel draws: one torch.rand (K, b, width) per hidden layer, keep where >= p."""
    p = torch.tensor(dropout).view(-1, 1, 1)
    if not (p > 0).any():
        return [None] * (len(sizes) - 1)
    return [(torch.rand(K, b, o, generator=gen) >= p) / (1 - p) for _, o in sizes[:-1]]


def _run(activation, task, optimizer, own, fused, steps=BATCHES, kernel_betas=BETAS, widths=WIDTHS,
         dropout=DROPOUT, active=None):  # fmt: skip
    n_out = 3 if task == "classification" else 2
    oracle = Oracle(activation, task, optimizer, n_out)
    sizes = list(zip([D, 12, 8], [12, 8, n_out]))
    flat = oracle.flat(sizes)
    kernel = StackKernel(flat, sizes, activation, task, optimizer, lr=LR, alpha=ALPHA, betas=kernel_betas,
                         momentum=MOMENTUM, nesterov=NESTEROV, dropout=dropout, widths=widths, fused=fused,
                         generator=torch.Generator().manual_seed(5))  # fmt: skip
    if active is not None:
        kernel.set_active(active)
    data_gen, mask_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(5)
    for b in steps:
        x, y = _batch(task, b, own, n_out, data_gen)
        losses = kernel.step(x, y)
        noises = _masks(b, mask_gen, sizes, dropout)
        for k in range(K):
            on = active is None or active[k]
            want = oracle.step(k, x[k] if own else x, y[k] if own else y, noises, active=on)
            assert losses[k].item() == pytest.approx(want, abs=TOL), f"member {k}: loss"
    return kernel, oracle, sizes


def _assert_same_params(kernel, oracle, sizes):
    torch.testing.assert_close(kernel.flat, oracle.flat(sizes), atol=TOL, rtol=0)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "vectorised"])
@pytest.mark.parametrize("own", [False, True], ids=["shared_rows", "own_rows"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_members_train_as_their_own_nets(optimizer, fused, own, task):
    # logistic: the one activation whose padded units need a mask (sigmoid(0) = 1/2)
    kernel, oracle, sizes = _run("logistic", task, optimizer, own, fused)
    _assert_same_params(kernel, oracle, sizes)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_activation_matches_autograd(activation, task):
    own = activation in ("gelu", "relu", "tanh")
    kernel, oracle, sizes = _run(activation, task, "adamw", own, fused=True)
    _assert_same_params(kernel, oracle, sizes)


def test_every_registered_activation_is_in_the_kernel():
    assert set(ACTIVATIONS) == set(REGISTRY)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "vectorised"])
def test_a_stopped_member_does_not_move_and_a_reset_slot_trains_afresh(fused):
    active = [True, False, True, True]
    kernel, oracle, sizes = _run("relu", "classification", "adam", False, fused, active=active, dropout=[0.0] * K)
    _assert_same_params(kernel, oracle, sizes)  # member 1 still holds its initial weights
    # member 1's weights blow up while it is stopped: nothing of it may leak, nothing may move
    with torch.no_grad():
        kernel.W[0][1, 0, 0] = math.nan
    before = kernel.flat.clone()
    kernel.step(*_batch("classification", 16, False, 3, torch.Generator().manual_seed(9)))
    torch.testing.assert_close(kernel.flat[1], before[1], equal_nan=True, atol=0, rtol=0)
    assert torch.isfinite(kernel.flat[[0, 2, 3]]).all()
    # the slot is refilled: fresh weights, fresh optimizer state; it trains like a fresh net with member 1's hp
    fresh = Oracle("relu", "classification", "adam", 3, seed=40)
    with torch.no_grad():
        kernel.flat[1] = fresh.flat(sizes)[1]
    kernel.reset_member(1)
    kernel.set_active([True] * K)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        x, y = _batch("classification", 16, False, 3, gen)
        losses = kernel.step(x, y)
        assert losses[1].item() == pytest.approx(fresh.step(1, x, y, [None, None]), abs=TOL)
    torch.testing.assert_close(kernel.flat[1], fresh.flat(sizes)[1], atol=TOL, rtol=0)


def test_a_refilled_slot_takes_the_new_members_widths_and_hyperparameters():
    kernel, _, sizes = _run("logistic", "classification", "adam", False, True, steps=[16], dropout=[0.0] * K)
    fresh = Oracle("logistic", "classification", "adam", 3, seed=50)  # its member 3 goes into slot 0
    with torch.no_grad():
        kernel.flat[0] = fresh.flat(sizes)[3]
    kernel.set_member(0, widths=WIDTHS[3], lr=LR[3], alpha=ALPHA[3], betas=BETAS[3])
    kernel.reset_member(0)
    gen = torch.Generator().manual_seed(6)
    for _ in range(3):
        x, y = _batch("classification", 16, False, 3, gen)
        assert kernel.step(x, y)[0].item() == pytest.approx(fresh.step(3, x, y, [None, None]), abs=TOL)
    torch.testing.assert_close(kernel.flat[0], fresh.flat(sizes)[3], atol=TOL, rtol=0)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "vectorised"])
def test_the_oracle_catches_a_wrong_beta(fused):
    wrong = [BETAS[0], BETAS[1], (0.9, 0.999), BETAS[3]]
    with pytest.raises(AssertionError, match="member 2"):
        _run("tanh", "regression", "adam", False, fused, kernel_betas=wrong)


def test_the_oracle_catches_a_wrong_padding():
    # without its members' widths the kernel cannot mask the padded logistic units: they output 1/2 and learn
    with pytest.raises(AssertionError, match="member [123]"):
        _run("logistic", "classification", "adam", False, True, widths=None, dropout=[0.0] * K)


def test_train_epoch_and_evaluate_give_the_mean_losses():
    n_out, sizes = 3, list(zip([D, 12, 8], [12, 8, 3]))
    oracle = Oracle("silu", "classification", "sgd", n_out)
    kernel = StackKernel(oracle.flat(sizes), sizes, "silu", "classification", "sgd", lr=LR, alpha=ALPHA,
                         momentum=MOMENTUM, nesterov=NESTEROV, widths=WIDTHS)  # fmt: skip
    gen = torch.Generator().manual_seed(3)
    X, y = torch.randn(37, D, generator=gen), torch.randint(0, n_out, (37,), generator=gen)
    perm = torch.randperm(37, generator=gen)
    got = kernel.train_epoch(X, y, perm, batch_size=16)
    want = [sum(oracle.step(k, X[perm[i:i + 16]], y[perm[i:i + 16]], [None, None]) * len(perm[i:i + 16])
                for i in range(0, 37, 16)) / 37 for k in range(K)]  # fmt: skip
    torch.testing.assert_close(got, torch.tensor(want), atol=TOL, rtol=0)
    loss, out = kernel.evaluate(X, y)
    for k, net in enumerate(oracle.nets):
        h = X
        for lin in net[:-1]:
            h = F.silu(lin(h))
        ref = net[-1](h).detach()
        torch.testing.assert_close(out[k], ref, atol=TOL, rtol=0)
        assert loss[k].item() == pytest.approx(F.cross_entropy(ref, y).item(), abs=TOL)


def test_members_with_their_own_rows_and_batch_order():
    n_out, sizes = 1, list(zip([D, 12, 8], [12, 8, 1]))
    oracle = Oracle("tanh", "regression", "adam", n_out)
    kernel = StackKernel(oracle.flat(sizes), sizes, "tanh", "regression", "adam", lr=LR, alpha=ALPHA, betas=BETAS)
    gen = torch.Generator().manual_seed(4)
    X, y = torch.randn(K, 30, D, generator=gen), torch.randn(K, 30, generator=gen)
    perm = torch.stack([torch.randperm(30, generator=gen) for _ in range(K)])
    got = kernel.train_epoch(X, y, perm, batch_size=8)
    for k in range(K):
        total = 0.0
        for i in range(0, 30, 8):
            idx = perm[k, i:i + 8]
            total += oracle.step(k, X[k, idx], y[k, idx].view(-1, 1), [None, None]) * len(idx)
        assert got[k].item() == pytest.approx(total / 30, abs=TOL)
    _assert_same_params(kernel, oracle, sizes)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_stack_of_one_trains_as_its_net(optimizer):
    # K = 1 is the engine's sequential path
    sizes = list(zip([D, 12, 8], [12, 8, 2]))
    oracle = Oracle("gelu", "regression", optimizer, 2)
    kernel = StackKernel(oracle.flat(sizes)[:1].clone(), sizes, "gelu", "regression", optimizer, lr=LR[:1],
                         alpha=[1e-2], betas=BETAS[:1], momentum=MOMENTUM[:1], nesterov=NESTEROV[:1])  # fmt: skip
    oracle.opts[0].param_groups[0]["weight_decay"] = 1e-2
    gen = torch.Generator().manual_seed(8)
    for b in BATCHES:
        x, y = _batch("regression", b, False, 2, gen)
        assert kernel.step(x, y)[0].item() == pytest.approx(oracle.step(0, x, y, [None, None]), abs=TOL)
    torch.testing.assert_close(kernel.flat[0], oracle.flat(sizes)[0], atol=TOL, rtol=0)
