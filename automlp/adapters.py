"""Every private Optuna and torch API automlp still uses, in one place, each with the reason.

An upgrade that moves or drops one of these breaks tests/test_adapters.py by name, not a search at run time.
Imports nothing from automlp, and not torch at import time (automlp.workers must stay free of it), so any module
may use it.
"""

from __future__ import annotations

import functools

import optuna

# Optuna's heartbeat interface: the optimize loop and fail_stale_trials call these methods on a storage. The
# journal storage has no heartbeats in Optuna 5; automlp.storage gives it some by implementing this base.
from optuna.storages._heartbeat import BaseHeartbeat  # noqa: F401
# Whether a storage beats; Optuna sends heartbeats only inside study.optimize, so our ask-and-tell runners beat
# themselves, for storages where this is true.
from optuna.storages._heartbeat import is_heartbeat_enabled  # noqa: F401
# The lock interface JournalFileBackend takes as lock_obj; automlp's flock-based lock implements it (the public
# symlink and open locks outlive a process killed while holding them).
from optuna.storages.journal._file import BaseJournalFileLock  # noqa: F401

# The method of BaseHeartbeat that lists a study's stale trials; automlp's storages extend it (a dead process on
# this machine is stale at once), and Optuna's fail_stale_trials calls it.
STALE_TRIAL_IDS = "_get_stale_trial_ids"



@functools.cache  # called in the per-member update loop
def fused_steps() -> dict:
    """Torch's single-pass fused optimizer steps (what Adam(fused=True) and SGD(fused=True) call), used by the
    hand-written training kernels to update a flat parameter tensor without building an optimizer per step."""
    import torch

    return {"adam": torch._fused_adam_, "adamw": torch._fused_adamw_, "sgd": torch._fused_sgd_}


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage behind a study object (Optuna keeps it private): heartbeats are recorded on it by trial id."""
    return study._storage


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """A trial's storage id (its number counts within the study; the storage's heartbeat API takes the id)."""
    return trial._trial_id
