"""The model folder of a finished search: the model it ships (`study.final`), as one folder whatever it is
(one network: `write.write_model`; a bag or an ensemble: `ensemble.write_ensemble`). `export_final` rebuilds that
model later from the stored study (`automlp export`), from the trials' seeds and kept validation outputs."""

from __future__ import annotations

from pathlib import Path

import optuna

from automlp.data import PreparedData, to_tensors
from automlp.errors import ExportError
from automlp.export.ensemble import write_ensemble
from automlp.export.write import open_finished_study, trial_info, write_model
from automlp.heldout import rank_trials
from automlp.metrics import get_metric
from automlp.search.final import FinalModel, build_final
from automlp.search.trial import TrialRun, replay
from automlp.spec import Spec


def export_search(outcome, spec: Spec) -> Path | None:
    """The model folder of a finished `run_search` (`SearchOutcome`): the model it ships (`study.final`),
    as built at the end of the search (no retraining here)."""
    if outcome.best_run is None or outcome.final is None:
        return None
    return _write(spec.study_dir / "model", outcome.final, outcome.study, outcome.best_run, outcome.data, spec,
                  outcome.metric)


def export_final(spec: Spec, kind: str | None = None, out_dir: Path | None = None) -> tuple[Path, FinalModel]:
    """Rebuild the model `study.final: kind` (default: the spec's) would ship from the stored study: the best
    trial replayed from its seed, then refitted, bagged or ensembled as at the end of a search (an ensemble's
    members are chosen on the validation or out-of-fold outputs the trials kept in the study folder)."""
    study, data, metric, device = open_finished_study(spec)
    ranked = rank_trials(study, get_metric(metric).direction)
    if not ranked:
        raise ExportError(f"study.name: study '{study.study_name}' has no COMPLETE trial to export; run automlp "
                          "search with this spec first")
    tensors = to_tensors(data, device)
    best_run = replay(ranked[0], spec, data, tensors, metric)
    wanted = spec.model_copy(deep=True)
    wanted.study.final = kind or spec.study.final
    final = build_final(wanted, study, data, tensors, metric, best_run)
    folder = _write(out_dir or spec.study_dir / "model", final, study, best_run, data, wanted, metric)
    return folder, final


def _write(out: Path, final: FinalModel, study: optuna.Study, best_run: TrialRun, data: PreparedData, spec: Spec,
           metric: str) -> Path:
    if final.run is None:  # bag, ensemble: one folder, one blended network
        return write_ensemble(out, final.members, final.data, spec, kind=final.kind, scores=final.scores,
                              metric=metric, details=final.info, rows=data.sizes())
    info = trial_info(rank_trials(study)[0], best_run) | {"final": final.kind}
    return write_model(out, final.run, final.data, spec, trial=info, scores=final.scores, metric=metric,
                       refit=final.refit)
