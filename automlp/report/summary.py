"""The summary of a search (summary.json and summary.md in the study folder): the facts a finished run knows
without retraining anything but the best model's predictions."""

from __future__ import annotations

import json

import optuna

from automlp.data import PreparedData
from automlp.metrics import get_metric
from automlp.model import count_params
from automlp.search.run import SearchOutcome
from automlp.search.study import count_states, storage_url
from automlp.search.trial import TrialRecord, TrialRun, split_scores
from automlp.spec import Spec
from automlp.storage import redact


def summarize(outcome: SearchOutcome, spec: Spec) -> dict:
    """Build the summary of a search, write summary.json and summary.md, and keep it on the outcome."""
    outcome.summary = build_summary(outcome.study, spec, outcome.data, outcome.metric, outcome.best_run,
                                    outcome.wall_s, outcome.device)
    write_summary(outcome.summary, spec)
    return outcome.summary


def build_summary(study: optuna.Study, spec: Spec, data: PreparedData, metric: str, best_run: TrialRun | None,
                  wall_s: float, device) -> dict:
    summary = {
        "study": spec.study.name, "storage": redact(storage_url(spec)), "metric": metric,
        "direction": get_metric(metric).direction, "task": data.task, "data": data.source,
        "rows": data.sizes(), "n_features": data.n_features, "classes": [str(c) for c in data.classes],
        "trials": count_states(study), "wall_time_s": round(wall_s, 2), "device": str(device),
        "best": None,
    }
    if best_run is None:
        return summary
    best = study.best_trial
    scores = split_scores(best_run, data, next(best_run.model.parameters()).device)
    r = best_run.result
    summary["best"] = {
        "trial": best.number, "value": best.value, "params": best.params,
        "architecture": best_run.mlp.describe(), "layers": best_run.mlp.layer_sizes(),
        "activation": best_run.mlp.activation, "n_params": count_params(best_run.mlp),
        "epochs_trained": r.n_epochs, "best_epoch": r.best_epoch, "max_epochs": best_run.config.max_epochs,
        "early_stopped": r.stop_reason == "early_stopping", "stop_reason": r.stop_reason,
        "train_time_s": r.train_time_s, "seed": TrialRecord.read(best).seed,
        "scores": scores,
    }
    return summary


def summary_markdown(s: dict) -> str:
    lines = [f"# automlp study `{s['study']}`", "",
             f"- data: {s['data']} ({s['task']}; rows train/val/test: {s['rows']['train']}/{s['rows']['val']}/"
             f"{s['rows']['test']}; {s['n_features']} features after preprocessing)",
             f"- metric: {s['metric']} ({s['direction']})",
             "- trials: " + ", ".join(f"{k.lower()} {v}" for k, v in s["trials"].items()),
             f"- wall time: {s['wall_time_s']:.1f} s on {s['device']}", f"- storage: {s['storage']}", ""]
    b = s["best"]
    if b is None:
        return "\n".join(lines + ["No trial finished, so there is no best model yet."]) + "\n"
    lines += [f"## Best trial: #{b['trial']}", "", f"- architecture: {b['architecture']} "
              f"({b['n_params']:,} parameters)",
              f"- epochs: {b['epochs_trained']} of at most {b['max_epochs']} (best epoch {b['best_epoch']}; "
              f"{'early stopping fired' if b['early_stopped'] else 'stopped: ' + b['stop_reason']})", "",
              "| parameter | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in b["params"].items()]
    metrics = list(b["scores"]["val"])
    lines += ["", "| split | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for split in ("train", "val", "test"):
        lines.append(f"| {split} | " + " | ".join(_fmt(b["scores"][split].get(m)) for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write_summary(summary: dict, spec: Spec) -> None:
    d = spec.study_dir
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    tmp.replace(d / "summary.json")  # atomic: a crash never leaves half a summary
    (d / "summary.md").write_text(summary_markdown(summary))
