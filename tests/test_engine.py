"""The one trainer: registries, members with their own rows, slots that refill, stop and deadline.

Oracles: every member of a stack must train exactly as the same config trained alone (`train`, K = 1, the
hand-written kernel) on the same rows in the same batch order."""

from __future__ import annotations

import threading

import pytest
import torch
from sklearn.datasets import load_digits

from automlp import registry, spec
from automlp.data import TrainData
from automlp.engine import Member, TrainConfig, seed_everything, train, train_stack
from automlp.engine.activations import ACTIVATIONS
from automlp.engine.optim import FAMILIES, TORCH_OPTIMIZERS
from automlp.engine.schedules import SCHEDULES
from automlp.model import MLPConfig, build_mlp

CPU = torch.device("cpu")
pytestmark = pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout contract")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    return TrainData(X[:300], torch.tensor(y[:300]), X[300:400], torch.tensor(y[300:400]), "classification", 10, CPU)


def subset(data: TrainData, train_rows: slice, val_rows: slice) -> TrainData:
    return TrainData(data.X_train[train_rows], data.y_train[train_rows], data.X_val[val_rows], data.y_val[val_rows],
                     data.task, data.n_classes, data.device)


def alone(net: MLPConfig, tc: TrainConfig, data: TrainData):
    """The reference: one net trained by itself (K = 1), from the weights its seed gives."""
    seed_everything(tc.seed)
    model = build_mlp(net)
    return train(model, data, tc), model


def assert_same_training(got, ref, model=None, ref_model=None, rel=1e-5):
    for key in ("train_loss", "val_loss", "val_score"):
        assert got.history[key] == pytest.approx(ref.history[key], rel=rel, abs=1e-6), key
    assert (got.best_epoch, got.n_epochs, got.stop_reason) == (ref.best_epoch, ref.n_epochs, ref.stop_reason)
    if model is not None:
        for a, b in zip(ref_model.state_dict().values(), model.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def tc(seed, **kw):
    return TrainConfig(**{"optimizer": "adam", "lr": 1e-2, "batch_size": 32, "max_epochs": 4, "patience": None,
                          "seed": seed, **kw})


def test_registry_names_match_the_implementations():
    assert set(registry.ACTIVATIONS) == set(ACTIVATIONS)
    assert set(registry.OPTIMIZERS) == set(TORCH_OPTIMIZERS)
    assert set(registry.STACKABLE_OPTIMIZERS) == set(FAMILIES) <= set(registry.OPTIMIZERS)
    assert set(registry.LR_SCHEDULES) == set(SCHEDULES)
    assert (spec.ACTIVATIONS, spec.OPTIMIZERS, spec.LR_SCHEDULES) == (
        registry.ACTIVATIONS, registry.OPTIMIZERS, registry.LR_SCHEDULES)


def test_members_with_their_own_rows_train_as_separate_trainings(digits):
    """Two folds of unequal size (they run out of batches at different steps), one member on the shared rows in
    its own batch order, one in the shared order: each equals a K = 1 training on its rows."""
    folds = [subset(digits, slice(0, 200), slice(0, 60)), subset(digits, slice(90, 300), slice(40, 100))]
    net = MLPConfig(64, 10, (24, 16), "tanh")
    members = [Member("fold0", net, tc(1, alpha=1e-3), data=folds[0]),
               Member("fold1", MLPConfig(64, 10, (16, 8), "tanh"), tc(2, lr=3e-3), data=folds[1]),
               Member("own order", net, tc(3, lr_schedule="cosine"), batch_seed=3),
               Member("shared", net, tc(0, alpha=1e-2))]  # the stack's order is seeded by member 0's seed: 1
    outcomes = {o.tag: o for o in train_stack(members, digits)}
    assert sorted(outcomes) == sorted(m.tag for m in members)
    for m in members:
        data = m.data or digits
        config = m.config if m.tag != "shared" else TrainConfig(**{**m.config.__dict__, "seed": 1})
        ref, ref_model = alone(m.net, config, data)
        if m.tag == "shared":  # same batches as a K = 1 training seeded 1, own weights (seed 0)
            assert outcomes[m.tag].result.history["train_loss"] != ref.history["train_loss"]
            continue
        assert_same_training(outcomes[m.tag].result, ref, outcomes[m.tag].model, ref_model)


def test_a_refilled_slot_trains_as_a_fresh_member(digits):
    """Member a stops after 2 epochs; its slot takes a wider refill (the stack is laid out again) that trains
    exactly as alone, while b's training is exactly what it is without any refill."""
    a = Member("a", MLPConfig(64, 10, (16, 16), "relu"), tc(1, max_epochs=2))
    b = Member("b", MLPConfig(64, 10, (24, 8), "relu"), tc(2, lr=3e-3, max_epochs=5))
    refill = Member("r", MLPConfig(64, 10, (32, 32), "relu"), tc(5, optimizer="adam", lr=5e-3), batch_seed=5)
    pending = [refill]
    got = {o.tag: o for o in train_stack([a, b], digits, on_done=lambda o: pending.pop() if pending else None)}
    without = {o.tag: o for o in train_stack([a, b], digits)}
    assert [got[t].result.n_epochs for t in "abr"] == [2, 5, 4]
    assert_same_training(got["b"].result, without["b"].result, rel=1e-6)
    ref, ref_model = alone(refill.net, refill.config, digits)
    assert_same_training(got["r"].result, ref, got["r"].model, ref_model)
    fresh = {o.tag: o for o in train_stack([b, refill], digits)}  # the same config as a member from the start
    assert_same_training(got["r"].result, fresh["r"].result, rel=1e-6)


def test_a_stack_of_one_refills_one_net_after_another(digits):
    """The sequential path: K = 1 with refills of any config (lbfgs too), each trained as alone."""
    first = Member(0, MLPConfig(64, 10, (16,), "relu"), tc(1, max_epochs=2))
    queue = [Member(2, MLPConfig(64, 10, (8,), "gelu"), tc(3, optimizer="lbfgs", max_epochs=3), batch_seed=3),
             Member(1, MLPConfig(64, 10, (32, 16), "silu"), tc(2, optimizer="sgd", lr=0.05, max_epochs=3),
                    batch_seed=2)]
    outcomes = train_stack([first], digits, on_done=lambda o: queue.pop() if queue else None)
    assert [o.tag for o in outcomes] == [0, 1, 2]
    for o, m in zip(outcomes[1:], [Member(1, *_cfgs(1)), Member(2, *_cfgs(2))]):
        ref, ref_model = alone(m.net, m.config, digits)
        assert_same_training(o.result, ref, o.model, ref_model)


def _cfgs(i):
    return {1: (MLPConfig(64, 10, (32, 16), "silu"), tc(2, optimizer="sgd", lr=0.05, max_epochs=3)),
            2: (MLPConfig(64, 10, (8,), "gelu"), tc(3, optimizer="lbfgs", max_epochs=3))}[i]


def test_stop_ends_every_member_after_its_epoch_and_declines_refills(digits):
    stop = threading.Event()
    members = [Member(k, MLPConfig(64, 10, (16,), "relu"), tc(k, max_epochs=50)) for k in range(3)]

    def on_epoch(reports):
        if reports[0].epoch == 2:
            stop.set()
        return set()

    refills = [Member("late", MLPConfig(64, 10, (16,), "relu"), tc(9))]
    outcomes = train_stack(members, digits, on_epoch=on_epoch, stop=stop,
                           on_done=lambda o: refills.pop() if refills else None)
    by_tag = {o.tag: o.result for o in outcomes}
    assert [(by_tag[k].stop_reason, by_tag[k].n_epochs) for k in range(3)] == [("interrupted", 2)] * 3
    assert by_tag[0].notes == ["stopped after epoch 2: interrupted"]
    assert (by_tag["late"].stop_reason, by_tag["late"].n_epochs) == ("interrupted", 0)


def test_a_passed_deadline_stops_the_members_after_their_epoch_with_a_note(digits):
    members = [Member(k, MLPConfig(64, 10, (16,), "relu"), tc(k, max_epochs=50)) for k in range(2)]
    outcomes = train_stack(members, digits, deadline=0.0)
    assert [(o.result.stop_reason, o.result.n_epochs, o.result.best_epoch) for o in outcomes] == \
        [("timeout", 1, 1)] * 2
    assert outcomes[0].result.notes == ["stopped after epoch 1: the search's timeout had passed; its best epoch so "
                                        "far is kept"]


def test_a_refill_must_fit_the_stack(digits):
    members = [Member(k, MLPConfig(64, 10, (16,), "relu"), tc(k, max_epochs=1)) for k in range(2)]
    odd = Member("odd", MLPConfig(64, 10, (16, 16), "relu"), tc(5))
    with pytest.raises(ValueError, match="a refill must have the stack's key"):
        train_stack(members, digits, on_done=lambda o: odd if o.tag == 0 else None)


def test_the_kernel_hands_over_to_autograd_mid_training(digits, monkeypatch):
    """A stack starts on the hand-written kernel; a refill with its own rows moves it to autograd for good. The
    member already training goes on as it would have (the optimizer state crosses over), the refill trains as alone,
    and the whole run equals one on autograd from the start."""
    from automlp.engine import stack

    a = Member("a", MLPConfig(64, 10, (16, 16), "relu"), tc(1, max_epochs=2))
    b = Member("b", MLPConfig(64, 10, (24, 8), "relu"), tc(2, alpha=1e-2, max_epochs=5))
    fold = subset(digits, slice(0, 150), slice(0, 50))
    refill = Member("r", MLPConfig(64, 10, (16, 16), "relu"), tc(5, lr=5e-3), data=fold)

    def run():
        pending = [refill]
        return {o.tag: o for o in train_stack([a, b], digits, on_done=lambda o: pending.pop() if pending else None)}

    got = run()
    without = {o.tag: o for o in train_stack([a, b], digits)}
    assert_same_training(got["b"].result, without["b"].result)
    ref, ref_model = alone(refill.net, refill.config, fold)
    assert_same_training(got["r"].result, ref, got["r"].model, ref_model)
    monkeypatch.setattr(stack, "USE_KERNEL", False)
    on_autograd = run()
    for tag in "abr":
        assert_same_training(got[tag].result, on_autograd[tag].result)
