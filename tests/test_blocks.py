"""The stacked blocks against the reference packages (rtdl_num_embeddings, tabm) with copied weights, and the
stacked form itself: member k of a stack is the K = 1 model, exportable, with the gradients it would have alone."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import rtdl_num_embeddings as rtdl
import tabm
import torch

from automlp.blocks import BlockConfig
from automlp.blocks.net import BlockNet, compute_bins

torch.manual_seed(0)
X = torch.randn(48, 6)
X[:, 2] = torch.randint(0, 3, (48,)).float()  # a column of few values: repeated quantiles merge


def _net(cfg: BlockConfig, k: int = 3, task: str = "classification", widths=(16, 8), out: int = 3) -> BlockNet:
    bins = [compute_bins(X[:, : cfg.n_numeric], cfg.n_bins)] * k if cfg.embedding == "piecewise_linear" else None
    net = BlockNet(6, out, widths, "relu", cfg, task, n_members=k, bins=bins)
    for m in range(k):
        net.init_member(m, seed=100 + m)
    return net.eval()


def _stacked_embedding(net: BlockNet, m: int, x: torch.Tensor) -> torch.Tensor:
    f, d = net.cfg.n_numeric, net.cfg.d_embedding
    return net.embed(x.unsqueeze(0).expand(net.n_members, *x.shape))[m][:, : f * d].reshape(len(x), f, d)


def test_periodic_embedding_equals_rtdl_periodic_embeddings():
    cfg = BlockConfig(n_numeric=4, embedding="periodic", d_embedding=8, n_frequencies=5, frequency_init_scale=0.3)
    net = _net(cfg)
    ref = rtdl.PeriodicEmbeddings(4, 8, n_frequencies=5, frequency_init_scale=0.3, lite=False)
    with torch.no_grad():
        ref.periodic.weight.copy_(net.emb_freq[1])
        ref.linear.weight.copy_(net.emb_w[1])
        ref.linear.bias.copy_(net.emb_b[1])
    assert torch.allclose(_stacked_embedding(net, 1, X), ref(X[:, :4]), atol=1e-6)
    assert net.emb_freq.abs().max() <= 3 * 0.3 and 0.15 < net.emb_freq.std() < 0.45  # truncated N(0, 0.3)


def test_piecewise_linear_bins_and_embedding_equal_rtdl():
    cfg = BlockConfig(n_numeric=4, embedding="piecewise_linear", d_embedding=4, n_bins=8)
    ours, theirs = compute_bins(X[:, :4], 8), rtdl.compute_bins(X[:, :4], 8)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs)) and len(ours[2]) == 3  # 3 values: 2 bins
    net = _net(cfg)
    with torch.no_grad():
        net.emb_w.normal_()  # version B starts the PLE map at zero; any weights must agree
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = rtdl.PiecewiseLinearEmbeddings(theirs, 4, activation=False, version="B")
        ref.linear0.weight.copy_(net.emb_w0[2])
        ref.linear0.bias.copy_(net.emb_b0[2])
        ref.linear.weight.copy_(net.emb_w[2])
    far = torch.randn(40, 6) * 3  # outside the training range too: the first and last bins extrapolate
    assert torch.allclose(_stacked_embedding(net, 2, far), ref(far[:, :4]), atol=1e-5)


@pytest.mark.parametrize("arch", ["tabm", "tabm_mini"])
def test_tabm_members_equal_the_tabm_package(arch):
    ref = tabm.TabM.make(n_num_features=6, d_out=3, k=4, n_blocks=2, d_block=16, arch_type=arch.replace("_", "-"),
                         dropout=0.0)
    net = BlockNet(6, 3, (16, 16), "relu", BlockConfig(arch=arch, k_ensemble=4), "classification", 2)
    net.init_member(0, 1)
    net.init_member(1, 2)
    m = 1
    with torch.no_grad():
        for layer, block in zip(net.layers, ref.backbone.blocks):
            lin = block[0]
            lin.weight.copy_(layer.w[m].T)
            if arch == "tabm":
                lin.r.copy_(layer.r[m])
                lin.s.copy_(layer.s[m])
                lin.bias.copy_(layer.b[m])
            else:
                lin.bias.copy_(layer.b[m, 0])
        if arch == "tabm_mini":
            ref.backbone.affine.weight.copy_(net.layers[0].r[m])
        ref.output.weight.copy_(net.w_out[m])
        ref.output.bias.copy_(net.b_out[m])
    assert torch.allclose(net.eval().forward_members(X)[m], ref.eval()(X), atol=1e-6)
    # TabM's init: first adapter random signs (no embedding), the rest ones; biases alike across members
    assert set(net.layers[0].r[m].unique().tolist()) == {-1.0, 1.0}
    if arch == "tabm":
        assert torch.equal(net.layers[1].r[m], torch.ones_like(net.layers[1].r[m]))
        assert torch.equal(net.layers[0].b[m], net.layers[0].b[m, :1].expand_as(net.layers[0].b[m]))


def test_tabm_predicts_the_mean_of_its_members_and_trains_on_the_mean_of_their_losses():
    net = _net(BlockConfig(n_numeric=3, embedding="periodic", arch="tabm", k_ensemble=5))
    y = torch.randint(0, 3, (48,))
    members = net.forward_members(X)  # (K, B, E, C)
    proba = torch.softmax(net(X), -1)
    assert torch.allclose(proba, torch.softmax(members, -1).mean(2), atol=1e-6)
    losses = net.member_losses(X, y)
    expected = torch.stack([torch.nn.functional.cross_entropy(members[:, :, e].reshape(-1, 3), y.repeat(3),
                                                              reduction="none").view(3, -1).mean(1)
                            for e in range(5)]).mean(0)
    assert torch.allclose(losses, expected, atol=1e-6)
    reg = _net(BlockConfig(arch="tabm_mini", k_ensemble=4), task="regression", out=1)
    assert torch.allclose(reg(X), reg.forward_members(X).mean(2), atol=1e-6)


BLOCKS = [BlockConfig(n_numeric=4, embedding="periodic"),
          BlockConfig(n_numeric=4, embedding="piecewise_linear", n_bins=6, arch="tabm_mini", k_ensemble=4),
          BlockConfig(n_numeric=4, embedding="piecewise_linear", feature_scaling=True, arch="tabm", k_ensemble=3),
          BlockConfig(feature_scaling=True)]


@pytest.mark.parametrize("cfg", BLOCKS, ids=lambda c: c.describe())
def test_member_is_a_plain_exportable_model_computing_exactly_that_member(cfg):
    net = _net(cfg)
    stacked = net(X)
    for m in range(3):
        one = net.member(m)
        assert torch.equal(one(X), stacked[m])
        scripted = torch.jit.script(one)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        buf.seek(0)
        assert torch.allclose(torch.jit.load(buf)(X), stacked[m], atol=1e-6)
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.member(1), (X,), buf, input_names=["features"], output_names=["outputs"],
                          dynamic_axes={"features": {0: "rows"}}, dynamo=False)
    got = ReferenceEvaluator(onnx.load_from_string(buf.getvalue())).run(None, {"features": X[:7].numpy()})[0]
    assert np.allclose(got, stacked[1, :7].detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("cfg", BLOCKS, ids=lambda c: c.describe())
def test_a_stacked_member_has_the_gradient_it_has_alone(cfg):
    """With the parameters in one flat (K, P) tensor, member k's slice of the gradient of the summed losses is
    the gradient of member k trained alone (K = 1), and its start depends only on its seed, not its slot."""
    net = _net(cfg).train()
    net.flatten()
    y = torch.randint(0, 3, (48,))
    net.member_losses(X, y).sum().backward()
    alone = BlockNet(6, 3, (16, 8), "relu", cfg, "classification", 1,
                     bins=[compute_bins(X[:, :4], cfg.n_bins)] if cfg.embedding == "piecewise_linear" else None)
    alone.init_member(0, seed=100 + 2)
    alone.flatten()
    assert torch.equal(alone.flat[0], net.flat[2])
    alone.member_losses(X, y).sum().backward()
    assert torch.allclose(alone.flat_grad[0], net.flat_grad[2], atol=1e-6)
    assert net.flat_grad[2].abs().sum() > 0
    # weight decay's prefix holds exactly the linear maps' weights
    assert net.n_decay == sum(dict(net.named_parameters())[n][0].numel() for n in net.decayed())


def test_feature_scaling_scales_the_first_layers_inputs():
    net = _net(BlockConfig(feature_scaling=True))
    before = net(X)
    with torch.no_grad():
        net.scale[1, 0] = 0.0
    after = net(X)
    X0 = X.clone()
    X0[:, 0] = 0.0
    assert torch.equal(after[0], before[0]) and torch.allclose(after[1], net(X0)[1])


# ---- in the engine: the population oracle, extended to nets of blocks ------------------------------------------

def _data(task: str):
    from automlp.data import TrainData

    gen = torch.Generator().manual_seed(3)
    X = torch.randn(260, 6, generator=gen)
    if task == "classification":
        y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).long() + (X[:, 3] > 1).long()
        return TrainData(X[:200], y[:200], X[200:], y[200:], task, 3, torch.device("cpu"))
    y = X[:, 0] + torch.sin(3 * X[:, 1])
    return TrainData(X[:200], y[:200], X[200:], y[200:], task, 0, torch.device("cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("task, blocks, own_order", [
    ("classification", BlockConfig(n_numeric=4, embedding="piecewise_linear", n_bins=6, arch="tabm_mini",
                                   k_ensemble=3, task="classification"), False),
    ("regression", BlockConfig(n_numeric=4, embedding="periodic", feature_scaling=True, arch="tabm", k_ensemble=2),
     True)])
def test_a_stacked_member_with_blocks_trains_as_it_does_alone(task, blocks, own_order):
    """K members of one block structure in one stack (flat parameters, the stacked optimizer) each train exactly
    as that config trained alone (K = 1: autograd and torch's optimizer): member 0 on the stack's shared batch
    order, every member with its own order, label smoothing per member."""
    from automlp.engine import Member, TrainConfig, train_stack
    from automlp.model import MLPConfig

    data = _data(task)
    out = 3 if task == "classification" else 1
    net = MLPConfig(6, out, (16, 16), "relu", 0.0, blocks)
    tcs = [TrainConfig(optimizer="adamw", lr=lr, alpha=a, batch_size=32, max_epochs=4, patience=None, seed=s,
                       betas=(0.9, b2), label_smoothing=ls, metric="accuracy" if task == "classification" else "r2")
           for lr, a, s, b2, ls in [(0.01, 1e-3, 5, 0.95, 0.1), (0.003, 0.0, 6, 0.999, 0.0), (0.02, 1e-2, 7, 0.9, 0.05)]]
    members = [Member(k, net, tc, batch_seed=tc.seed if own_order else None) for k, tc in enumerate(tcs)]
    stacked = {o.tag: o for o in train_stack(members, data)}
    for k in ([0, 1, 2] if own_order else [0]):
        (alone,) = train_stack([Member(k, net, tcs[k])], data)
        got, ref = stacked[k].result, alone.result
        for key in ("train_loss", "val_loss", "val_score"):
            assert got.history[key] == pytest.approx(ref.history[key], rel=1e-4, abs=1e-5), (k, key)
        with torch.no_grad():
            assert torch.allclose(stacked[k].model(data.X_val), alone.model(data.X_val), rtol=1e-4, atol=1e-4)


def test_recipe_schedules_follow_their_definitions():
    from automlp.blocks.schedules import coslog4, flat_cosine, warmup_cosine
    from automlp.engine import TrainConfig
    from automlp.engine.schedules import lr_multiplier

    # coslog4 at the middle of epoch e of 30: 0.5 (1 - cos(2 pi log2(1 + 15 t))), t = (e - 0.5) / 30
    for e in (1, 8, 30):
        t = (e - 0.5) / 30
        assert coslog4(e, 30) == pytest.approx(0.5 * (1 - np.cos(2 * np.pi * np.log2(1 + 15 * t))))
    values = [coslog4(e, 200) for e in range(1, 201)]
    peaks = sum(1 for a, b, c in zip(values, values[1:], values[2:]) if a < b > c)
    assert peaks == 4 and max(values) > 0.99 and values[-1] < 0.01  # four cycles, ending near 0
    assert [round(warmup_cosine(e, 40), 3) for e in (1, 2, 3)] == [0.25, 0.75, 1.0]  # 5% of 40 epochs = 2
    assert warmup_cosine(40, 40) < 0.01 and flat_cosine(10, 40) == 1.0 and flat_cosine(40, 40) < 0.01
    tc = TrainConfig(lr_schedule="coslog4", max_epochs=30)
    assert lr_multiplier(tc, 8, []) == coslog4(8, 30)  # the engine's registry serves them
