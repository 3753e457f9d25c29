"""The one trainer: stacks of K members (K = 1 is one net alone), see loop.py.

Names are imported on first use (PEP 562), so that `automlp.model` can take its activation modules from
`automlp.engine.activations` without importing the loop, which imports `automlp.model`.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Member": "loop", "EpochReport": "loop", "MemberOutcome": "loop", "train_stack": "loop", "train": "loop",
    "stack_key": "loop", "TrainConfig": "config", "TrainResult": "config", "predict": "config",
    "seed_everything": "config", "early_stopping_check": "ledger",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'automlp.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"automlp.engine.{_EXPORTS[name]}"), name)
