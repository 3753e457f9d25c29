"""The console: parses, calls, prints. An AutomlpError becomes its message and exit status 2."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from automlp.errors import AutomlpError, SpecError, StorageUnreachable

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
    from automlp.crash import save_crash_report

    return save_crash_report(e)


def handles_errors(fn):
    """Turn our own errors into a short message and exit status 2; never a traceback.

    Errors of the system (disk full, read-only folder) are exit 2 as well; Ctrl-C is exit 130; anything
    else is a bug in automlp: one line, exit 1, with the traceback in a file (AUTOMLP_DEBUG=1 raises it)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (AutomlpError, StorageUnreachable) as e:
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
        self.waiting = False  # a storage outage has been said

    def __call__(self, p) -> None:
        from automlp.progress import progress_text

        now = time.monotonic()
        done = p.n_total is not None and p.n_done >= p.n_total
        if not self.tty and now - self.last < 2.0 and not done:
            return  # in logs, a line every 2 s at most
        self.last = now
        line = progress_text(p, self.metric)
        if self.tty:
            typer.echo("\r" + line.ljust(78), err=True, nl=False)
        else:
            typer.echo(line, err=True)

    def storage_wait(self, seconds: float | None) -> None:
        """Called by the storage's retry layer (`retry.watch`) while it retries (each attempt, and each second
        between); None when it answers again. An outage of a second or more is said at once, whenever the last
        progress line was; then a line every 2 s at most in logs."""
        now = time.monotonic()
        if seconds is None:
            self.waiting = False
            return
        if seconds < 1.0 or (self.waiting and not self.tty and now - self.last < 2.0):
            return
        self.waiting, self.last = True, now
        line = f"storage unreachable, retrying ({seconds:.0f} s)"
        typer.echo("\r" + line.ljust(78) if self.tty else line, err=True, nl=not self.tty)

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

    from automlp.api import run_study
    from automlp.workers import start_worker_server

    spec = _load(spec_path, n_trials=n_trials, timeout=timeout, storage=storage, device=device, seed=seed,
                 data_path=data_path)
    if workers > 1:
        start_worker_server()  # its imports overlap with the ones below
    from automlp.api import export_best, report_after_search
    from automlp.retry import watch
    from automlp.workers import quiet_optuna

    quiet_optuna()  # for the whole command: the report's figures and the export log nothing either
    progress = None if quiet else ProgressLine(spec.study.metric or "value")
    unwatch = watch(progress.storage_wait) if progress is not None else (lambda: None)
    try:
        outcome = run_study(spec, progress, workers)
    except OSError as e:  # reading errors are DataError/StorageError by now: this is the study folder
        _fail(f"output.dir: cannot write in {spec.study_dir}: {_os_message(e)}")
    finally:
        unwatch()
        if progress is not None:
            progress.close()
    for note in outcome.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(best_table(outcome.summary))
    typer.echo(f"wrote {spec.study_dir / 'summary.json'} and summary.md")
    if not no_export:
        folder = export_best(outcome, spec)
        if folder is not None:
            typer.echo(f"wrote {outcome.final.describe()} to {folder}/")
    if outcome.interrupted:
        raise typer.Exit(130)
    result, rescored = report_after_search(spec, outcome, report=not no_report, export=not no_export)
    if result is not None:
        _echo_report(result)
    if rescored is not None:  # report.use_rescored_choice: the k-fold winner replaced the export
        typer.echo(f"exported the k-fold winner, trial #{rescored[0]}, to {rescored[1]}")


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
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder for report.html/.md/.json "
                                          "(default: the study folder)."),
    out_alias: Optional[Path] = typer.Option(None, "--out", hidden=True, help="Old name of --output."),
) -> None:
    """Write the study report (report.html, report.md, report.json): best model and overfitting diagnostics."""
    from automlp.api import report_study

    _echo_report(report_study(study, study_name, storage, output or out_alias))


@app.command()
@handles_errors
def export(
    study: Path = typer.Argument(..., help="The study: its spec file (YAML), or its folder (studies/<name>, "
                                 "which holds the spec in model/metadata.json).", show_default=False),
    trial: Optional[int] = typer.Option(None, "--trial", min=0, help="Trial number to export (default: the best)."),
    refit: bool = typer.Option(False, "--refit", help="Retrain on train + validation for the best epoch count "
                               "early stopping found."),
    final: Optional[str] = typer.Option(None, "--final", help="Rebuild the model study.final ships: best, refit, "
                                        "bag or ensemble (default: the spec's study.final).", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Model folder (default: <study>/model)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (overrides study.storage)."),
    data_path: Optional[Path] = typer.Option(None, "--data", help="Data file (overrides data.path)."),
) -> None:
    """Write the model a study ships (study.final, rebuilt from the trials' seeds), or one trial of it, as a model
    folder."""
    from automlp.export.write import export_study, spec_from_study_dir
    from automlp.spec import FINAL_MODELS, apply_overrides

    if final is not None and final not in FINAL_MODELS:
        _fail(f"--final: unknown final model {final!r}; use one of {', '.join(FINAL_MODELS)}")
    if final is not None and (trial is not None or refit):
        _fail(f"--final: a final model is built from the study, not from one trial; drop --final, or drop "
              f"{'--trial' if trial is not None else '--refit'}")
    if study.is_dir():
        spec = apply_overrides(spec_from_study_dir(study, storage), storage=storage, data_path=data_path)
    else:
        spec = _load(study, storage=storage, data_path=data_path)
    kind = final or spec.study.final
    if trial is None and not refit and kind != "best":
        from automlp.export.final import export_final

        folder, built = export_final(spec, kind, output)
        for note in [built.info["note"]] if built.info.get("note") else []:
            typer.echo(f"note: {note}", err=True)
        test = "  ".join(f"{k} {v:.4f}" for k, v in built.scores["test"].items())
        typer.echo(f"{built.describe()}: test {test}")
        typer.echo(f"wrote {folder}/")
        return
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
        typer.echo(f"note: column '{col}': {count} row(s) with a category unseen in training (got {example!r}"
                   f"{' first' if count > 1 else ''}); "
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
        from automlp.api import check_data as check

        data = check(spec)
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
    from automlp.retry import process_stats
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
    waited = process_stats()
    typer.echo(f"worker {HOST} pid {os.getpid()} on study {spec.study.name} in "
               f"{redact(storage_of(spec))}: ran {sum(ran.values())} trials ({states})"
               + ("; interrupted" if interrupted else "")
               + (f"; rode out storage outages of {waited.waited_s:.1f} s ({waited.n_retried_calls} calls retried)"
                  if waited.outages_s else ""))
    if interrupted:
        raise typer.Exit(130)


@app.command()
@handles_errors
def status(
    spec_path: Optional[Path] = typer.Argument(None, help="The spec file (gives the study name and storage).",
                                               show_default=False),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="Study name (overrides the spec's)."),
    storage: Optional[str] = typer.Option(None, "--storage", envvar="AUTOMLP_STORAGE",
                                          help="Optuna storage URL (overrides the spec's)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    study_alias: Optional[str] = typer.Option(None, "--study", hidden=True, help="Old name of --study-name."),
) -> None:
    """Trials by state, the best so far and the workers seen recently, for a study running anywhere."""
    from automlp.report.status import status_text, study_status
    from automlp.search.study import load_study
    from automlp.storage import redact, storage_of

    n_total, flag_name = None, study_name or study_alias
    if spec_path is not None:
        spec = _load(spec_path, storage=storage)
        study_name, url, n_total = flag_name or spec.study.name, storage_of(spec), spec.study.n_trials
        name_where, where = "--study-name" if flag_name else "study.name", spec.study.storage_where
    elif flag_name is None or storage is None:
        missing = " and ".join(f for f, v in (("--study-name", flag_name), ("--storage", storage)) if v is None)
        raise SpecError(f"{missing}: needed when no spec file is given; give a spec file, or both --study-name NAME "
                        "and --storage URL")
    else:
        study_name, url, name_where, where = flag_name, storage, "--study-name", "--storage"
    s = study_status(load_study(url, study_name, name_where, where))
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
