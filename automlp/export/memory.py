"""A `Predictor` of a model still in memory, without writing a folder: the same preprocessing (as data, checked
against the fitted scikit-learn pipeline) and the same forward pass as a loaded model folder."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from automlp.export.load import Predictor
from automlp.export.write import _metadata, check_preprocessing, preprocessing_state

if TYPE_CHECKING:
    from automlp.data import PreparedData
    from automlp.search import TrialRun
    from automlp.spec import Spec


def memory_predictor(run: TrialRun, data: PreparedData, spec: Spec, *, trial: dict, scores: dict,
                     metric: str) -> Predictor:
    """What `load(folder)` would return for the folder `write_model` would write, with `path` None."""
    state = preprocessing_state(data, spec.data.na_values)
    transform = check_preprocessing(state, data)
    meta = _metadata(run, data, spec, trial, scores, metric, None, [], state, {})
    net = copy.deepcopy(run.model).cpu().eval()
    return Predictor(None, meta, transform, net, torch.device("cpu"))
