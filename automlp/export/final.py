"""The model folder of a finished search: the model it ships (`study.final`), as one folder whatever it is
(one network: `write.write_model`; a bag or an ensemble: `ensemble.write_ensemble`)."""

from __future__ import annotations

from pathlib import Path

from automlp.export.ensemble import write_ensemble
from automlp.export.write import trial_info, write_model
from automlp.heldout import rank_trials
from automlp.spec import Spec


def export_search(outcome, spec: Spec) -> Path | None:
    """The model folder of a finished `run_search` (`SearchOutcome`): the model it ships (`study.final`),
    as built at the end of the search (no retraining here)."""
    final = outcome.final
    if outcome.best_run is None or final is None:
        return None
    out = spec.study_dir / "model"
    if final.run is None:  # bag, ensemble: one folder, one blended network
        return write_ensemble(out, final.members, final.data, spec, kind=final.kind, scores=final.scores,
                              metric=outcome.metric, details=final.info, rows=outcome.data.sizes())
    info = trial_info(rank_trials(outcome.study)[0], outcome.best_run) | {"final": final.kind}
    return write_model(out, final.run, final.data, spec, trial=info, scores=final.scores, metric=outcome.metric,
                       refit=final.refit)
