"""The console: parses, calls, prints. An AutomlpError becomes its message and exit status 2."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Optional

import typer

from automlp.errors import AutomlpError, SpecError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Declarative AutoML for neural networks on tabular data.")

SpecArg = typer.Argument(..., help="The spec file (YAML).", show_default=False)


def _fail(msg: str, code: int = 2) -> None:
    for line in str(msg).splitlines() or [""]:
        typer.echo(f"error: {line}" if line else "error", err=True)
    raise typer.Exit(code)


def _os_message(e: OSError) -> str:
    where = f"{Path(e.filename).name}: " if e.filename else ""
    msg = f"{where}{e.strerror or e}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        msg += ("; free some space and run the same command again: finished trials are kept in the study's "
                "storage and are not run again")
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        msg += "; choose a folder you can write to (output.dir)"
    return msg


def _crash_report(e: BaseException) -> str:
    """Save the traceback of an unexpected error to a file; the console gets one line."""
    fd, path = tempfile.mkstemp(prefix="automlp-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write("".join(traceback.format_exception(e)))
    return path


def handles_errors(fn):
    """Turn our own errors into a short message and exit status 2; never a traceback.

    Errors of the system (disk full, read-only folder) are exit 2 as well; Ctrl-C is exit 130; anything
    else is a bug in automlp: one line, exit 1, with the traceback in a file (AUTOMLP_DEBUG=1 raises it)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AutomlpError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            typer.echo("\ninterrupted", err=True)
            raise typer.Exit(130) from None
        except OSError as e:
            _fail(_os_message(e))
        except (typer.TyperException, typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - not hidden: reported, saved, exit status 1
            if os.environ.get("AUTOMLP_DEBUG"):
                raise
            _fail(f"internal error ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); this is a "
                  f"bug in automlp, please report it with the traceback saved in {_crash_report(e)}", code=1)
    return wrapper


def _load(spec_path: Path, **overrides):
    from automlp.spec import apply_overrides, load_spec

    return apply_overrides(load_spec(spec_path), **overrides)


class ProgressLine:
    """`trials 12/50 | best 0.9667 | 8.1 s elapsed | ETA 25 s`, redrawn in place on a terminal."""

    def __init__(self, metric: str):
        self.metric = metric
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, p) -> None:
        now = time.monotonic()
        done = p.n_total is not None and p.n_done >= p.n_total
        if not self.tty and now - self.last < 2.0 and not done:
            return  # in logs, a line every 2 s at most
        self.last = now
        total = f"/{p.n_total}" if p.n_total else ""
        best = f"{p.best_value:.4g}" if p.best_value is not None else "-"
        eta = f" | ETA {p.eta_s:.0f} s" if p.eta_s is not None else ""
        line = f"trials {p.n_done}{total} | best {self.metric} {best} | {p.elapsed_s:.1f} s elapsed{eta}"
        if self.tty:
            typer.echo("\r" + line.ljust(78), err=True, nl=False)
        else:
            typer.echo(line, err=True)

    def close(self) -> None:
        if self.tty:
            typer.echo("", err=True)


def best_table(summary: dict) -> str:
    """The final table of the best trial, for the console."""
    b = summary["best"]
    counts = ", ".join(f"{k.lower()} {v}" for k, v in summary["trials"].items())
    head = [f"study {summary['study']}: {counts}; {summary['wall_time_s']:.1f} s on {summary['device']}"]
    if b is None:
        return "\n".join(head + ["no trial finished: there is no best model yet"])
    rows = [("best trial", f"#{b['trial']}"), ("architecture", b["architecture"]),
            ("parameters", f"{b['n_params']:,}"),
            ("epochs", f"{b['epochs_trained']} of {b['max_epochs']} (best {b['best_epoch']}; "
                       f"early stopping {'fired' if b['early_stopped'] else 'did not fire: ' + b['stop_reason']})")]
    rows += [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in b["params"].items()]
    metrics = list(b["scores"]["val"])
    for split in ("train", "val", "test"):
        rows.append((f"{split} scores", "  ".join(f"{m} {b['scores'][split][m]:.4f}" for m in metrics
                                                 if m in b["scores"][split])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(head + [f"  {k.ljust(width)}  {v}" for k, v in rows])


@app.command()
@handles_errors
def search(
    spec_path: Path = SpecArg,
    n_trials: Optional[int] = typer.Option(None, "--n-trials", min=1, help="Finished trials the study should "
                                           "hold (study-wide); raise it to add trials to a finished study."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=0.001, help="Wall-clock budget in seconds."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (overrides study.storage)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Study seed (overrides study.seed)."),
    data_path: Optional[Path] = typer.Option(None, "--data", help="Data file (overrides data.path)."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, max=256, help="Worker processes sharing the study "
                                "on this machine (cores are split between them; one GPU each where there are "
                                "several)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress line."),
    no_export: bool = typer.Option(False, "--no-export", help="Do not write the best model to <study>/model/."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip report.html/report.md (faster; "
                                   "`automlp report` writes them later)."),
) -> None:
    """Run (or resume) the search a spec describes, then write the summary, the best model and the report to the
    study folder.

    Ctrl-C stops the running trials after their current epoch (marked FAIL) and still writes the summary;
    the same command resumes. A second Ctrl-C stops at once."""

    from automlp.workers import graceful_stop, quiet_optuna, run_parallel, start_worker_server

    spec = _load(spec_path, n_trials=n_trials, timeout=timeout, storage=storage, device=device, seed=seed,
                 data_path=data_path)
    if workers > 1:
        start_worker_server()  # its imports overlap with the ones below
    from automlp.report.summary import summarize
    from automlp.search import run_search

    quiet_optuna()
    progress = None if quiet else ProgressLine(spec.study.metric or "value")
    try:
        with graceful_stop() as stop:
            if workers > 1:
                outcome = run_parallel(spec, workers, progress=progress, stop=stop)
            else:
                outcome = run_search(spec, progress=progress, stop=stop)
        summary = summarize(outcome, spec)
    except OSError as e:  # reading errors are DataError/StorageError by now: this is the study folder
        _fail(f"output.dir: cannot write in {spec.study_dir}: {_os_message(e)}")
    finally:
        if progress is not None:
            progress.close()
    for note in outcome.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(best_table(summary))
    typer.echo(f"wrote {spec.study_dir / 'summary.json'} and summary.md")
    if not no_export:
        _export_best(outcome, spec)
    if outcome.interrupted:
        raise typer.Exit(130)
    _report_after_search(spec, outcome, skip=no_report, export=not no_export)


def _report_after_search(spec, outcome, skip: bool, export: bool) -> None:
    from automlp.report import build_report, record_spec

    record_spec(outcome.study, spec)
    if skip:
        return
    result = build_report(spec, outcome.study, outcome.data, outcome.best_run)
    _echo_report(result)
    chosen = (result.facts.get("choice") or {}).get("trial")
    if export and spec.report.use_rescored_choice and chosen is not None and chosen != result.facts["best"]["trial"]:
        from automlp.export.write import export_study

        folder, _ = export_study(spec, chosen)  # report.use_rescored_choice: the k-fold winner replaces the export
        typer.echo(f"exported the k-fold winner, trial #{chosen}, to {folder}")


def _echo_report(result) -> None:
    v = result.facts["verdict"]
    typer.echo(f"verdict: {v['verdict']}: {v['text']}")
    typer.echo(f"wrote {result.html_path} ({result.html_bytes / 1e6:.1f} MB) and report.md in "
               f"{result.facts['timings']['total_s']:.1f} s")


@app.command()
@handles_errors
def report(
    study: Optional[Path] = typer.Argument(None, help="A spec file, or a study folder (holding study.journal).",
                                           show_default=False),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="The study's name in --storage."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL of the study."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for report.html/.md/.json "
                                       "(default: the study folder)."),
) -> None:
    """Write the study report (report.html, report.md, report.json): best model and overfitting diagnostics."""
    import optuna

    from automlp.report import build_report, spec_of_study
    from automlp.search.study import load_study
    from automlp.spec import apply_overrides
    from automlp.storage import JOURNAL_NAME, default_storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if study is not None and study.is_dir():
        url = storage or default_storage_url(study)
        if storage is None and not (study / JOURNAL_NAME).exists():
            raise SpecError(f"{study}: no {JOURNAL_NAME} in this folder; give the spec file, or --storage")
        st = load_study(url, study_name)
        spec = apply_overrides(spec_of_study(st, str(study)), storage=storage)
        out = out or study
    elif study is not None:
        spec = _load(study, storage=storage)
        if study_name:
            spec.study.name = study_name
        st = load_study(spec.study.storage or default_storage_url(spec.study_dir), spec.study.name)
    elif storage is not None:
        st = load_study(storage, study_name)
        spec = apply_overrides(spec_of_study(st, storage), storage=storage)
    else:
        raise SpecError("report: give a spec file, a study folder, or --storage (with --study-name)")
    _echo_report(build_report(spec, st, out_dir=out))


def _export_best(outcome, spec) -> None:
    from automlp.export.write import export_search

    folder = export_search(outcome, spec)
    if folder is not None:
        typer.echo(f"wrote the best model (trial #{outcome.study.best_trial.number}) to {folder}/")


@app.command()
@handles_errors
def export(
    study: Path = typer.Argument(..., help="The study: its spec file (YAML), or its folder (studies/<name>, "
                                 "which holds the spec in model/metadata.json).", show_default=False),
    trial: Optional[int] = typer.Option(None, "--trial", min=0, help="Trial number to export (default: the best)."),
    refit: bool = typer.Option(False, "--refit", help="Retrain on train + validation for the best epoch count "
                               "early stopping found."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Model folder (default: <study>/model)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (overrides study.storage)."),
    data_path: Optional[Path] = typer.Option(None, "--data", help="Data file (overrides data.path)."),
) -> None:
    """Write a trial of a study (retrained from its seed) as a model folder."""
    from automlp.export.write import export_study, spec_from_study_dir
    from automlp.spec import apply_overrides

    if study.is_dir():
        spec = apply_overrides(spec_from_study_dir(study), storage=storage, data_path=data_path)
    else:
        spec = _load(study, storage=storage, data_path=data_path)
    folder, info = export_study(spec, trial, refit, output)
    for note in info["notes"]:
        typer.echo(f"note: {note}", err=True)
    test = "  ".join(f"{k} {v:.4f}" for k, v in info["scores"]["test"].items())
    how = f"refit on train + validation for {info['refit']['epochs']} epochs" if refit else "replayed"
    typer.echo(f"trial #{info['trial']} ({how}): test {test}")
    typer.echo(f"wrote {folder}/")


@app.command()
@handles_errors
def predict(
    model_dir: Path = typer.Argument(..., help="A model folder (from automlp search or export).",
                                     show_default=False),
    data: Path = typer.Argument(..., help="CSV, TSV or Parquet file with the training columns.",
                                show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output CSV (default: standard output)."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Copy this input column to the output "
                                            "instead of the row number."),
    chunk_rows: int = typer.Option(100_000, "--chunk-rows", min=1, help="Rows read and predicted at a time."),
) -> None:
    """Predict every row of a file: row (or --id-column), prediction, and proba_<class> for classification."""
    from automlp.export import load

    predictor = load(model_dir)
    if output is None:
        try:
            report = predictor.predict_csv(data, sys.stdout, chunk_rows, id_column)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader (`| head`) stopped reading: stop too, as other tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
    else:
        tmp = output.with_name(f".{output.name}.tmp")
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                report = predictor.predict_csv(data, f, chunk_rows, id_column)
            tmp.replace(output)  # no half-written predictions under the final name
        finally:
            tmp.unlink(missing_ok=True)
    if report.extra_columns:
        cols = report.extra_columns
        typer.echo(f"note: ignored {len(cols)} column(s) the model does not use: {', '.join(cols[:10])}"
                   + (" ..." if len(cols) > 10 else ""), err=True)
    for col, (count, example) in report.unseen.items():
        how = "counted in the column's infrequent category" if predictor.features.has_infrequent[col] else \
            "its one-hot columns left at 0"
        typer.echo(f"note: column '{col}': {count} row(s) with a category unseen in training (e.g. {example!r}); "
                   f"{how}, as the training pipeline does", err=True)
    if output is not None:
        typer.echo(f"wrote {report.n_rows} predictions to {output}", err=True)


@app.command()
@handles_errors
def validate(
    spec_path: Path = SpecArg,
    check_data: bool = typer.Option(False, "--check-data", help="Also read, split and preprocess the data, "
                                    "as a search would, to catch data errors before it starts."),
) -> None:
    """Check a spec without running anything (exit 0 when valid, 2 when not)."""
    spec = _load(spec_path)
    if check_data:
        from automlp.data import prepare_data
        from automlp.spec import check_metric_fits

        data = prepare_data(spec.data, spec.study.seed)
        if spec.study.metric:  # the default metric always fits the task
            check_metric_fits(spec.study.metric, data.task)
        for note in data.notes:
            typer.echo(f"note: {note}", err=True)
        sizes = data.sizes()
        typer.echo(f"data: {data.source}: {data.task}, rows train/val/test {sizes['train']}/{sizes['val']}/"
                   f"{sizes['test']}, {data.n_features} features after preprocessing")
    from automlp.search.space import active_params

    searched = [n for n, p in active_params(spec).items() if not p.is_fixed]
    typer.echo(f"{spec_path}: valid. study '{spec.study.name}', {len(searched)} searched parameters "
               f"({', '.join(searched) or 'none'}), n_trials {spec.study.n_trials}")


@app.command()
@handles_errors
def worker(
    spec_path: Path = SpecArg,
    storage: Optional[str] = typer.Option(None, "--storage", envvar="AUTOMLP_STORAGE", help="Optuna storage URL "
                                          "shared by all workers (overrides study.storage; also read from "
                                          "$AUTOMLP_STORAGE, which keeps a password out of the process list)."),
    n_trials: Optional[int] = typer.Option(None, "--n-trials", min=1, help="Study-wide finished trials."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=0.001, help="This worker's wall-clock budget "
                                            "in seconds."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Study seed (overrides study.seed)."),
    data_path: Optional[Path] = typer.Option(None, "--data", help="Data file (overrides data.path)."),
) -> None:
    """Join a shared study and run its trials until the study-wide budget is spent (no test scoring, no
    summary: run `automlp search` with the same storage for those). Start any number, on any machines."""
    from automlp.search import run_worker
    from automlp.storage import HOST, redact, storage_of
    from automlp.workers import graceful_stop, quiet_optuna

    spec = _load(spec_path, n_trials=n_trials, timeout=timeout, storage=storage, device=device, seed=seed,
                 data_path=data_path)
    quiet_optuna()
    with graceful_stop() as stop:
        ran = run_worker(spec, stop)
    interrupted = ran.pop("interrupted", 0)
    states = ", ".join(f"{k.lower()} {v}" for k, v in ran.items()) or "none"
    typer.echo(f"worker {HOST} pid {os.getpid()} on study {spec.study.name} in "
               f"{redact(storage_of(spec))}: ran {sum(ran.values())} trials ({states})"
               + ("; interrupted" if interrupted else ""))
    if interrupted:
        raise typer.Exit(130)


@app.command()
@handles_errors
def status(
    spec_path: Optional[Path] = typer.Argument(None, help="The spec file (gives the study name and storage).",
                                               show_default=False),
    study_name: Optional[str] = typer.Option(None, "--study", help="Study name (overrides the spec's)."),
    storage: Optional[str] = typer.Option(None, "--storage", envvar="AUTOMLP_STORAGE",
                                          help="Optuna storage URL (overrides the spec's)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Trials by state, the best so far and the workers seen recently, for a study running anywhere."""
    from automlp.report.status import status_text, study_status
    from automlp.search.study import load_study
    from automlp.storage import redact, storage_of

    n_total = None
    if spec_path is not None:
        spec = _load(spec_path, storage=storage)
        study_name, url, n_total = study_name or spec.study.name, storage_of(spec), spec.study.n_trials
    elif study_name is None or storage is None:
        raise SpecError("status: give a spec file, or both --study NAME and --storage URL")
    else:
        url = storage
    s = study_status(load_study(url, study_name))
    typer.echo(json.dumps(s, indent=2) if as_json else status_text(s, redact(url), n_total))


@app.command()
def schema() -> None:
    """Print the JSON Schema of a spec (for editor autocompletion)."""
    from automlp.spec import spec_json_schema

    typer.echo(json.dumps(spec_json_schema(), indent=2))


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("\ninterrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
