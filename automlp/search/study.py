"""The study: sampler and pruner from the spec, one way to open (create or resume) and one to load a study,
and the names of the study attrs automlp keeps."""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState

from automlp.errors import StorageError
from automlp.metrics import default_metric, get_metric
from automlp.search.space import grid_space, space_fingerprint
from automlp.spec import Spec, check_metric_fits
from automlp.storage import open_storage, redact, storage_of

# study user attrs
SPACE_ATTR = "automlp_space"  # space_fingerprint(spec) of the first run
METRIC_ATTR = "automlp_metric"  # the metric the trials' values are
SPEC_ATTR = "automlp_spec"  # the spec, so `automlp report` works from the storage alone
CHOICE_ATTR = "automlp_chosen_trial"  # the k-fold winner (report.use_rescored_choice), which the export takes
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyNotFoundError(StorageError):
    """The storage opened, and holds no study of that name."""


def resolve_metric(spec: Spec, task: str) -> str:
    metric = spec.study.metric or default_metric(task)
    check_metric_fits(metric, task)
    return metric


def study_metric(study: optuna.Study, spec: Spec, task: str) -> str:
    """The metric a stored study was run with (the spec's, for a study from before it was recorded)."""
    return study.user_attrs.get(METRIC_ATTR) or resolve_metric(spec, task)


def make_sampler(spec: Spec) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        # QMC is "experimental" in Optuna; the user chose it by name, a warning on every run adds nothing
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _make_sampler(spec)


def _make_sampler(spec: Spec) -> optuna.samplers.BaseSampler:
    s, seed = spec.study.sampler, spec.study.seed
    if s.type == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials)
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.type == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if s.type == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=s.n_startup_trials,
                                            warn_independent_sampling=False)
    return optuna.samplers.GridSampler(grid_space(spec), seed=seed)


def make_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    p = spec.study.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.type == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def storage_url(spec: Spec) -> str:
    return storage_of(spec)


def open_study(spec: Spec, metric: str) -> optuna.Study:
    """Create or resume the study; refuse one that exists with another space or metric."""
    url = storage_url(spec)
    storage = open_storage(url, spec.study.heartbeat_interval, spec.study.grace_period)
    name = spec.study.name
    direction = get_metric(metric).direction
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction=direction,
                                    sampler=make_sampler(spec), pruner=make_pruner(spec), load_if_exists=True)
    except ValueError as e:  # e.g. an existing study with the other direction
        raise StorageError(f"study.name: a study '{name}' exists in {redact(url)} and does not fit this spec "
                           f"({e}); choose another study.name") from None
    fp = space_fingerprint(spec)
    old, old_metric = study.user_attrs.get(SPACE_ATTR), study.user_attrs.get(METRIC_ATTR)
    if old is None:
        study.set_user_attr(SPACE_ATTR, fp)
        study.set_user_attr(METRIC_ATTR, metric)
        return study
    changed = [k for k in sorted(set(fp) | set(old)) if fp.get(k) != old.get(k)]
    if old_metric != metric:
        changed.insert(0, "metric")
    if changed:
        k = changed[0]
        what = f"{old_metric} -> {metric}" if k == "metric" else f"{old.get(k)} -> {fp.get(k)}"
        raise StorageError(
            f"study.name: study '{name}' in {redact(url)} was run with another search space "
            f"({', '.join('space.' + c if c != 'metric' else 'study.metric' for c in changed)}; {k}: {what}); "
            "its trials would not be comparable. Use a new study.name, or put the old values back")
    return study


def load_study(url: str, name: str | None = None) -> optuna.Study:
    """An existing study, for reading (status, report, export); never creates one. Without a name, the storage
    must hold exactly one study."""
    storage = open_storage(url)
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
    if name is None:
        if len(names) != 1:
            raise StorageError(f"storage {redact(url)} holds {len(names)} studies"
                               + (f" ({', '.join(names)}); pass --study-name" if names else ""))
        name = names[0]
    if name not in names:
        raise StudyNotFoundError(f"no study '{name}' in {redact(url)}; studies there: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=storage)


def count_states(study: optuna.Study) -> dict[str, int]:
    counts = {s.name: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] += 1
    return {k: v for k, v in counts.items() if v}


def n_finished(study: optuna.Study) -> int:
    return sum(1 for _ in study.get_trials(deepcopy=False, states=FINISHED))
