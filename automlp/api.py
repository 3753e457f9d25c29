"""automlp from Python: `search(spec, data)` runs what `automlp search` runs and returns a `Result`.

One core, two fronts: the CLI's `search` command and this module call the same functions (`make_spec`,
`run_study`, `export_best`, `report_after_search`); the CLI only adds its printing and exit codes.

The function is bound as `automlp.search` (see automlp/__init__.py): the module `automlp.search` (the search
engine) stays importable by its full name (`from automlp.search import run_search`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from automlp.errors import SpecError
from automlp.spec import Spec, apply_overrides, dump_spec, load_spec, validate_spec_dict

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from automlp.data import PreparedData
    from automlp.export.load import Predictor
    from automlp.report import ReportResult
    from automlp.search import SearchOutcome

OVERRIDES = ("n_trials", "timeout", "storage", "device", "seed", "data_path")  # the CLI's flags, by name


# --------------------------------------------------------------------------- the spec


def make_spec(spec: Any, data: Any = None, **overrides: Any) -> Spec:
    """A validated spec from a YAML path, a dict in the YAML's shape or a `Spec` (copied, never changed), with
    `data` (a DataFrame, an (X, y) pair, or a file path) replacing data.dataset/data.path, and the CLI's
    overrides applied. Every problem is a SpecError naming the field, as `automlp search` reports it."""
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(f"search() got an unexpected keyword argument {unknown[0]!r}; the overrides are: "
                        f"{', '.join(OVERRIDES)} (set any other field in the spec)")
    if isinstance(data, (str, os.PathLike)):
        overrides["data_path"], data = Path(data), None
    in_memory = data is not None
    given = in_memory or overrides.get("data_path") is not None
    if isinstance(spec, Spec):
        s = spec.model_copy(deep=True)
    elif isinstance(spec, dict):
        raw = copy.deepcopy(spec)
        if given and isinstance(raw.get("data", {}), dict):
            raw.setdefault("data", {})
        s = validate_spec_dict(raw, "spec", data_given=given)
    elif isinstance(spec, (str, os.PathLike)):
        s = load_spec(spec, data_given=given)
    else:
        raise SpecError(f"spec: expected the path of a YAML spec, a dict in its shape or an automlp Spec (got "
                        f"{type(spec).__name__})")
    data_path = overrides.pop("data_path", None)
    if data_path is not None:
        s = _revalidated(apply_overrides(s, data_path=Path(data_path)))  # a file's rules hold for the new path
    s = apply_overrides(s, **overrides)
    if in_memory:
        from automlp.frames import rows_from

        s.data.path = s.data.dataset = None
        s.data._rows = rows_from(data, s.data)
    return s


def _revalidated(s: Spec) -> Spec:
    raw = dump_spec(s)
    raw["data"].pop("dataset", None)
    out = validate_spec_dict(raw, "spec")
    out.study.name = s.study.name
    return out


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def quiet_optuna_logs() -> Iterator[None]:
    """Optuna's logger at WARNING while a search runs (no line per trial), then as the caller had it."""
    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        # importing Optuna imports tqdm.auto, which warns in Jupyter without ipywidgets ("IProgress not
        # found"); its widget is not used here (automlp.progress picks the text bar then)
        warnings.simplefilter("ignore", category=TqdmWarning)
        import optuna

    from automlp.workers import quiet_optuna

    before = optuna.logging.get_verbosity()
    quiet_optuna()
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[threading.Event]:
    """The first Ctrl-C (in Jupyter: Interrupt) ends the running trials after their current epoch, as in the
    CLI. Signal handlers exist only in the main thread; elsewhere KeyboardInterrupt still fails the trial."""
    if threading.current_thread() is not threading.main_thread():
        yield threading.Event()
        return
    from automlp.workers import graceful_stop

    with graceful_stop() as stop:
        yield stop


def run_study(spec: Spec, progress: Callable | None = None, workers: int = 1) -> SearchOutcome:
    """Run (or resume) the study of `spec`: in this process, or in `workers` processes sharing it; then the
    summary (summary.json, summary.md) is written and kept on the outcome."""
    with quiet_optuna_logs(), stop_on_interrupt() as stop:
        if workers > 1:
            from automlp.workers import run_parallel

            outcome = run_parallel(spec, workers, progress=progress, stop=stop)
        else:
            from automlp.search import run_search

            outcome = run_search(spec, progress=progress, stop=stop)
    if outcome.summary is None:  # the search package leaves the summary to automlp.report.summary
        from automlp.report.summary import summarize

        summarize(outcome, spec)
    return outcome


def export_best(outcome: SearchOutcome, spec: Spec) -> Path | None:
    """Write the search's best model to <study>/model/ (no retraining); None when no trial finished."""
    from automlp.export.final import export_search

    return export_search(outcome, spec)


def report_after_search(spec: Spec, outcome: SearchOutcome, report: bool = True, export: bool = True
                        ) -> tuple[ReportResult | None, tuple[int, Path] | None]:
    """Record the spec with the study; build the report unless `report` is False. With
    report.use_rescored_choice (and `export`), a k-fold winner other than the best trial replaces the exported
    model: returns (report, (trial, folder)) then, else (report, None)."""
    from automlp.report import build_report, record_spec

    record_spec(outcome.study, spec)
    if not report:
        return None, None
    result = build_report(spec, outcome.study, outcome.data, outcome.best_run)
    chosen = (result.facts.get("choice") or {}).get("trial")
    if export and spec.report.use_rescored_choice and chosen is not None and chosen != result.facts["best"]["trial"]:
        from automlp.export.write import export_study

        folder, _ = export_study(spec, chosen)
        return result, (chosen, folder)
    return result, None


def search(spec: Any, data: Any = None, *, progress: Any = None, report: bool = True, export: bool = True,
           workers: int = 1, **overrides: Any) -> Result:
    """Run (or resume) a search as `automlp search` does, and return its `Result`.

    spec: a YAML path, a dict in the YAML's shape, or a Spec. data: a DataFrame (data.target names the target
    column), an (X, y) pair, or a file path; it replaces data.dataset/data.path. progress: None, "bar" (a live
    bar) or a callable taking `automlp.search.Progress` after each trial. report / export: write report.html
    and the model folder into the study folder, as the CLI does (False: skip). overrides: n_trials, timeout,
    storage, device, seed, data_path, as the CLI's flags. Ctrl-C ends the running trial after its epoch (FAIL)
    and returns the Result with `interrupted` True; the same call resumes the study."""
    from automlp.progress import make_progress

    s = make_spec(spec, data, **overrides)
    show = make_progress(progress, s.study.metric or "score")
    try:
        outcome = run_study(s, show, workers)
    finally:
        if hasattr(show, "close"):
            show.close()
    model_dir = export_best(outcome, s) if export else None
    built = None
    if not outcome.interrupted:
        built, rescored = report_after_search(s, outcome, report, export)
        if rescored is not None:
            model_dir = rescored[1]
    return Result(s, outcome, model_dir, built)


def check_data(spec: Spec) -> PreparedData:
    """Read, split and preprocess the data as a search would (`automlp validate --check-data`): data errors
    and a metric that does not fit the inferred task surface before a search starts."""
    from automlp.data import prepare_data
    from automlp.spec import check_metric_fits

    data = prepare_data(spec.data, spec.study.seed)
    if spec.study.metric:  # the default metric always fits the task
        check_metric_fits(spec.study.metric, data.task)
    return data


def report_study(target: str | os.PathLike | None = None, study_name: str | None = None,
                 storage: str | None = None, out: str | os.PathLike | None = None) -> ReportResult:
    """Write the report of an existing study (`automlp report`): `target` is a spec file or a study folder
    (holding study.journal); or give `storage` (and `study_name`) alone. `out`: default the study folder."""
    with quiet_optuna_logs():
        return _report_study(target, study_name, storage, out)


def _report_study(target, study_name, storage, out) -> ReportResult:
    from automlp.report import build_report, load_study
    from automlp.storage import JOURNAL_NAME, default_storage_url, storage_of

    study = None if target is None else Path(target)
    if study is not None and study.is_dir():
        url = storage or default_storage_url(study)
        if storage is None and not (study / JOURNAL_NAME).exists():
            raise SpecError(f"{study}: no {JOURNAL_NAME} in this folder; give the spec file, or --storage")
        st = load_study(url, study_name, where="--storage" if storage else str(study))
        spec = apply_overrides(_stored_spec(st, str(study)), storage=storage)
        out = out or study
    elif study is not None:
        spec = apply_overrides(load_spec(study), storage=storage)
        if study_name:
            spec.study.name = study_name
        st = load_study(storage_of(spec), spec.study.name, "--study-name" if study_name else "study.name",
                        spec.study.storage_where)
    elif storage is not None:
        st = load_study(storage, study_name)
        spec = apply_overrides(_stored_spec(st, storage), storage=storage)
    else:
        raise SpecError("nothing to report on: give a spec file, a study folder, or --storage (with --study-name)")
    return build_report(spec, st, out_dir=None if out is None else Path(out))


def _stored_spec(study: optuna.Study, where: str) -> Spec:
    """The spec a study recorded; one searched on rows given in Python cannot be read again without them."""
    from automlp.report import SPEC_ATTR, spec_of_study

    data = (study.user_attrs.get(SPEC_ATTR) or {}).get("data") or {}
    if data and data.get("path") is None and data.get("dataset") is None:
        raise SpecError(f"{where}: study '{study.study_name}' was searched on rows given in Python "
                        "(automlp.search(spec, data)), which it does not keep; give the spec file with the rows' "
                        "data.path, or build the report from Python (Result.report_html())")
    return spec_of_study(study, where)


# --------------------------------------------------------------------------- the result


@dataclass
class Result:
    """What a search found: the best trial, its model (`predictor`), the study, and where the files are."""

    spec: Spec
    outcome: SearchOutcome = field(repr=False)
    model_dir: Path | None = None
    report: ReportResult | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ the search
    @property
    def study(self) -> optuna.Study:
        return self.outcome.study

    @property
    def summary(self) -> dict:
        """summary.json as a dict."""
        return self.outcome.summary

    @property
    def metric(self) -> str:
        return self.outcome.metric

    @property
    def notes(self) -> list[str]:
        return self.outcome.notes

    @property
    def interrupted(self) -> bool:
        return self.outcome.interrupted

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial | None:
        """The study's best trial (None when none finished)."""
        best = self.summary["best"]
        return None if best is None else self.study.trials[best["trial"]]

    @property
    def best_params(self) -> dict:
        best = self.summary["best"]
        return {} if best is None else dict(best["params"])

    @property
    def best_value(self) -> float | None:
        best = self.summary["best"]
        return None if best is None else best["value"]

    @property
    def scores(self) -> dict:
        """{"train"|"val"|"test": {metric: value}} of the best model."""
        best = self.summary["best"]
        return {} if best is None else best["scores"]

    @property
    def architecture(self) -> str | None:
        best = self.summary["best"]
        return None if best is None else best["architecture"]

    @property
    def verdict(self) -> str | None:
        """The report's verdict (fits well, overfits, ...), when a report was built."""
        return None if self.report is None else self.report.verdict

    def trials(self) -> pd.DataFrame:
        """Every trial of the study, one row each (Optuna's `trials_dataframe`)."""
        return self.study.trials_dataframe()

    # ------------------------------------------------------------------ the model
    @cached_property
    def predictor(self) -> Predictor | None:
        """The shipped model: loaded from the model folder when exported (checksums verified), else held in
        memory. None when no trial finished."""
        if self.model_dir is not None:
            from automlp.export import load

            return load(self.model_dir)
        o = self.outcome
        if o.best_run is None:
            return None
        from automlp.export.memory import memory_predictor
        from automlp.export.write import trial_info

        return memory_predictor(o.best_run, o.data, self.spec, trial=trial_info(self.best_trial, o.best_run),
                                scores=self.scores, metric=o.metric)

    def predict(self, X) -> Any:
        """`predictor.predict(X)`: labels or values for the rows of a DataFrame (or a CSV/Parquet path)."""
        if self.predictor is None:
            raise SpecError("predict: no trial finished, so there is no model; run more trials")
        return self.predictor.predict(X)

    # ------------------------------------------------------------------ files and display
    @property
    def study_dir(self) -> Path:
        return self.spec.study_dir

    @property
    def summary_path(self) -> Path:
        return self.study_dir / "summary.json"

    @property
    def report_path(self) -> Path | None:
        return None if self.report is None else self.report.html_path

    def report_html(self) -> str:
        """The full report page (report.html, plots included); built now when the search skipped it."""
        if self.report is None:
            self.report, _ = report_after_search(self.spec, self.outcome, report=True, export=False)
        return self.report.html_path.read_text(encoding="utf-8")

    def _repr_html_(self) -> str:
        from automlp.report.inline import inline_html

        paths = {"summary": self.summary_path, "report": self.report_path, "model": self.model_dir}
        return inline_html(self.summary, None if self.report is None else self.report.facts, paths,
                           self.interrupted)

    def __repr__(self) -> str:
        best = self.summary["best"]
        what = "no finished trial" if best is None else \
            f"best trial #{best['trial']} {self.metric} {best['value']:.4g} ({best['architecture']})"
        return f"Result(study {self.summary['study']!r}: {what}; {self.study_dir})"
