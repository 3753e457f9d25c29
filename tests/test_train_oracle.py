"""Reference oracle: the hand-written training step (automlp.engine.mlp_kernel, used by `train`) must give the losses
of a plain autograd loop run on the same initial weights, in the same batch order, to float rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from automlp.data import TrainData
from automlp.engine import TrainConfig, train
from automlp.engine.mlp_kernel import MLPKernel
from automlp.engine.optim import param_groups
from automlp.model import MLPConfig, build_mlp


def _plain_loop(model: nn.Module, data: TrainData, tc: TrainConfig) -> dict[str, list[float]]:
    """The textbook loop, with train()'s batch order: torch.randperm from a generator seeded with tc.seed."""
    classify = data.task == "classification"
    loss_fn = nn.CrossEntropyLoss() if classify else nn.MSELoss()
    y = data.y_train if classify else data.y_train.view(-1, 1)
    yv = data.y_val if classify else data.y_val.view(-1, 1)
    groups = param_groups(model, tc.alpha)
    opt = {"adam": lambda: torch.optim.Adam(groups, lr=tc.lr),
           "adamw": lambda: torch.optim.AdamW(groups, lr=tc.lr),
           "sgd": lambda: torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov)}[tc.optimizer]()
    gen = torch.Generator(device=data.device).manual_seed(tc.seed)
    n, hist = len(data.X_train), {"train_loss": [], "val_loss": []}
    for _ in range(tc.max_epochs):
        model.train()
        perm, total = torch.randperm(n, generator=gen, device=data.device), 0.0
        for i in range(0, n, tc.batch_size):
            idx = perm[i:i + tc.batch_size]
            loss = loss_fn(model(data.X_train[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            hist["val_loss"].append(loss_fn(model(data.X_val), yv).item())
        hist["train_loss"].append(total / n)
    return hist


def _data(task: str, n: int = 203, n_features: int = 9) -> TrainData:
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.normal(size=(n + 60, n_features)).astype(np.float32))
    if task == "classification":
        y = torch.from_numpy((X[:, 0] + X[:, 1] ** 2 > 1).long().numpy() + (X[:, 2] > 0.5).long().numpy())
    else:
        y = (X[:, 0] - 2 * X[:, 3] + 0.1 * torch.randn(n + 60, generator=torch.Generator().manual_seed(1)))
    return TrainData(X[:n], y[:n], X[n:], y[n:], task=task, n_classes=3 if task == "classification" else 0,
                     device=torch.device("cpu"))


CASES = [  # task, activation, dropout, optimizer, alpha; batch 16 leaves a partial last batch (203 = 12*16 + 11)
    ("classification", "relu", 0.0, "adam", 1e-3),
    ("classification", "gelu", 0.2, "adamw", 1e-2),  # dropout draws the same masks as nn.Dropout on CPU
    ("classification", "tanh", 0.0, "sgd", 1e-3),
    ("regression", "silu", 0.0, "adam", 0.0),
    ("regression", "leaky_relu", 0.1, "sgd", 1e-2),
    ("regression", "logistic", 0.0, "adamw", 1e-3),
]


def _compare(task: str, activation: str, dropout: float, optimizer: str, alpha: float, device: torch.device):
    data = _data(task)
    data = TrainData(data.X_train.to(device), data.y_train.to(device), data.X_val.to(device),
                     data.y_val.to(device), task=task, n_classes=data.n_classes, device=device)
    cfg = MLPConfig(data.X_train.shape[1], 3 if task == "classification" else 1, (24, 16), activation, dropout)
    tc = TrainConfig(optimizer=optimizer, lr=5e-3, alpha=alpha, batch_size=16, max_epochs=4, patience=None,
                     seed=3, momentum=0.9, nesterov=True, metric="accuracy" if task == "classification" else "r2",
                     precision="fp32")
    torch.manual_seed(0)
    fast_model = build_mlp(cfg).to(device)
    plain_model = build_mlp(cfg).to(device)
    plain_model.load_state_dict(fast_model.state_dict())
    assert MLPKernel.supports(fast_model, optimizer, device)  # the fast path is what is under test

    torch.manual_seed(11)  # the dropout masks come from the global generator in both loops
    fast = train(fast_model, data, tc).history
    torch.manual_seed(11)
    plain = _plain_loop(plain_model, data, tc)

    np.testing.assert_allclose(fast["train_loss"], plain["train_loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast["val_loss"], plain["val_loss"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("task,activation,dropout,optimizer,alpha", CASES)
def test_fast_trainer_matches_plain_autograd_loop(task, activation, dropout, optimizer, alpha):
    _compare(task, activation, dropout, optimizer, alpha, torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("task,activation,dropout,optimizer,alpha", CASES)
def test_fast_trainer_matches_plain_autograd_loop_on_cuda(task, activation, dropout, optimizer, alpha):
    """On CUDA the epochs after the first are one captured CUDA graph; dropout draws differ there (no p)."""
    _compare(task, activation, 0.0, optimizer, alpha, torch.device("cuda"))


def test_trained_parameters_own_their_storage():
    """The kernel trains views into one flat tensor; the returned model must not keep sharing it (export)."""
    data = _data("classification")
    model = build_mlp(MLPConfig(9, 3, (8,), "relu"))
    train(model, data, TrainConfig(batch_size=32, max_epochs=2, patience=None))
    for p in model.parameters():
        assert p.untyped_storage().nbytes() == p.numel() * p.element_size()
