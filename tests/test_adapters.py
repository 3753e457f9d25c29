"""The private Optuna and torch APIs automlp leans on (automlp/adapters.py): an upgrade that moves or changes
one fails here, by name, instead of in a search."""

from __future__ import annotations

import inspect

import optuna
import pytest
import torch

from automlp import adapters
from automlp.storage import HeartbeatJournalStorage, LivenessRDBStorage, open_storage


def test_the_heartbeat_interface_is_the_one_our_storages_implement(tmp_path):
    for name in ("record_heartbeat", adapters.STALE_TRIAL_IDS, "get_heartbeat_interval",
                 "get_heartbeat_stale_trial_callback"):
        assert callable(getattr(adapters.BaseHeartbeat, name)), name
    assert issubclass(HeartbeatJournalStorage, adapters.BaseHeartbeat)
    assert issubclass(LivenessRDBStorage, adapters.BaseHeartbeat)
    assert adapters.STALE_TRIAL_IDS in vars(HeartbeatJournalStorage)  # our override has Optuna's name
    params = list(inspect.signature(getattr(optuna.storages.RDBStorage, adapters.STALE_TRIAL_IDS)).parameters)
    assert params == ["self", "study_id"]


def test_heartbeats_are_seen_enabled_on_our_storages_only(tmp_path):
    journal = open_storage(f"journal:///{tmp_path}/a.journal", heartbeat_interval=1, grace_period=2)
    assert adapters.is_heartbeat_enabled(journal) is True
    assert adapters.is_heartbeat_enabled(optuna.storages.InMemoryStorage()) is False


def test_a_study_gives_its_storage_and_trials_their_storage_ids(tmp_path):
    storage = open_storage(f"journal:///{tmp_path}/a.journal", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage)
    assert adapters.storage_of(study) is storage
    study.ask()
    trial = study.ask()
    frozen = study.get_trials(deepcopy=False)[1]
    assert adapters.trial_id(trial) == adapters.trial_id(frozen)
    assert storage.get_trial(adapters.trial_id(trial)).number == trial.number == 1


def test_the_journal_lock_interface_is_acquire_and_release():
    assert {"acquire", "release"} <= set(adapters.BaseJournalFileLock.__abstractmethods__)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_torch_fused_optimizer_steps_exist(name):
    step = adapters.fused_steps()[name]
    assert callable(step)
    p, g = torch.ones(3), torch.full((3,), 0.5)
    if name == "sgd":
        step([p], [g], [], weight_decay=0.0, momentum=0.0, lr=0.1, dampening=0.0, nesterov=False,
             maximize=False, is_first_step=True)
    else:
        m, v, t = torch.zeros(3), torch.zeros(3), torch.ones(())  # the step count, already advanced
        step([p], [g], [m], [v], [], [t], lr=0.1, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8,
             amsgrad=False, maximize=False)
    assert torch.all(p < 1.0)  # one step against a positive gradient lowers every weight
