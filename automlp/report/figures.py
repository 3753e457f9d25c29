"""The report's plotly figures: our own (from the collected facts) and Optuna's (from the study).

Every string that comes from the data or the spec (class labels, target name, study name) is HTML-escaped
before it goes into a figure: plotly renders a subset of HTML in labels.
"""

from __future__ import annotations

import html
import warnings

import optuna
import plotly.graph_objects as go
from optuna.trial import TrialState

LAYOUT = dict(template="plotly_white", height=420, margin=dict(l=60, r=20, t=50, b=50))


def _e(s) -> str:
    return html.escape(str(s))


def learning_curves(best: dict) -> go.Figure:
    c = best["curves"]
    epochs = list(range(1, len(c.get("train_loss", [])) + 1))
    fig = go.Figure()
    fig.add_scatter(x=epochs, y=c.get("train_loss", []), name="training loss", mode="lines")
    fig.add_scatter(x=epochs, y=c.get("val_loss", []), name="validation loss", mode="lines")
    val = c.get("val_loss") or []
    if val:
        low = min(range(len(val)), key=val.__getitem__) + 1
        fig.add_vline(x=low, line_dash="dot", line_color="green",
                      annotation_text=f"validation loss lowest (epoch {low})", annotation_position="top left")
    if best["stop_reason"] == "early_stopping":
        fig.add_vline(x=best["epochs_trained"], line_dash="dash", line_color="red",
                      annotation_text=f"early stopping (epoch {best['epochs_trained']})",
                      annotation_position="bottom right")
    fig.update_layout(title=f"Learning curves of trial #{best['trial']}", xaxis_title="epoch", yaxis_title="loss",
                      **LAYOUT)
    return fig


def capacity_scatter(cap: dict) -> go.Figure:
    fig = go.Figure()
    for state in ("COMPLETE", "PRUNED"):
        rows = [r for r in cap["trials"] if r["state"] == state]
        if rows:
            fig.add_scatter(x=[r["n_params"] for r in rows], y=[r["gap"] for r in rows], mode="markers",
                            name=state.lower(), text=[f"trial #{r['trial']}" for r in rows])
    rho = cap.get("spearman")
    title = "Capacity vs gap" + (f" (Spearman ρ = {rho:+.2f})" if rho is not None else "")
    fig.update_layout(title=title, xaxis_title="parameters", yaxis_title="validation - training loss at best epoch",
                      xaxis_type="log", **LAYOUT)
    return fig


def stability_strip(stab: dict, metric: str) -> go.Figure:
    fig = go.Figure()
    for split in ("val", "test"):
        fig.add_scatter(x=[f"seed {s}" for s in stab["seeds"]], y=stab[split], mode="markers+lines",
                        name={"val": "validation", "test": "test"}[split])
    fig.update_layout(title="The best configuration retrained with other seeds", yaxis_title=metric, **LAYOUT)
    return fig


def confusion_heatmap(pred: dict) -> go.Figure:
    labels = [_e(x) for x in pred["labels"]]
    z = pred["confusion"]
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, colorscale="Blues", text=z, texttemplate="%{text}",
                               hovertemplate="true %{y}<br>predicted %{x}<br>%{z} rows<extra></extra>"))
    fig.update_layout(title="Confusion matrix (test split)", xaxis_title="predicted", yaxis_title="true",
                      yaxis_autorange="reversed", xaxis_type="category", yaxis_type="category", **LAYOUT)
    return fig


def roc(pred: dict) -> go.Figure:
    r = pred["roc"]
    fig = go.Figure()
    fig.add_scatter(x=r["fpr"], y=r["tpr"], mode="lines", name=f"AUC {r['auc']:.3f}")
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line_dash="dot", name="chance")
    fig.update_layout(title=f"ROC curve (test split; positive class {_e(r['positive'])})",
                      xaxis_title="false positive rate", yaxis_title="true positive rate", **LAYOUT)
    return fig


def predicted_vs_actual(pred: dict) -> go.Figure:
    a, p = pred["actual"], pred["predicted"]
    lo, hi = min(a + p), max(a + p)
    fig = go.Figure()
    fig.add_scatter(x=a, y=p, mode="markers", name="test rows", marker_opacity=0.6)
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", line_dash="dot", name="perfect")
    t = _e(pred["target"])
    fig.update_layout(title=f"Predicted vs actual {t} (test split)", xaxis_title=f"actual {t}",
                      yaxis_title=f"predicted {t}", **LAYOUT)
    return fig


def residuals(pred: dict) -> go.Figure:
    a, p = pred["actual"], pred["predicted"]
    fig = go.Figure(go.Scatter(x=p, y=[x - y for x, y in zip(a, p)], mode="markers", marker_opacity=0.6,
                               name="residual"))
    fig.add_hline(y=0, line_dash="dot")
    fig.update_layout(title="Residuals (actual - predicted) against the prediction", xaxis_title="predicted",
                      yaxis_title="residual", **LAYOUT)
    return fig


def own_figures(facts: dict) -> dict[str, go.Figure]:
    """Figures drawn from the facts; keys are stable ids used as div ids."""
    b = facts["best"]
    figs = {"learning-curves": learning_curves(b), "capacity-gap": capacity_scatter(facts["capacity"])}
    if len(facts["stability"]["seeds"]) > 1:
        figs["stability"] = stability_strip(facts["stability"], facts["metric"])
    pred = facts["predictions"]
    if facts["task"] == "classification":
        figs["confusion-matrix"] = confusion_heatmap(pred)
        if pred.get("roc"):
            figs["roc-curve"] = roc(pred)
    else:
        figs["predicted-vs-actual"] = predicted_vs_actual(pred)
        figs["residuals"] = residuals(pred)
    return figs


# --------------------------------------------------------------------------- Optuna's own


def _searched(study: optuna.Study) -> list[str]:
    """Parameters that took more than one value among completed trials."""
    seen: dict[str, set] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        for k, v in t.params.items():
            seen.setdefault(k, set()).add(v)
    return [k for k, vs in seen.items() if len(vs) > 1]


def optuna_figures(study: optuna.Study) -> tuple[dict[str, go.Figure], dict[str, str]]:
    """Optuna's plots of the study, and for each one it cannot draw, why."""
    vis = optuna.visualization
    n_done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    searched = _searched(study)
    figs, skipped = {}, {}
    figs["optimization-history"] = vis.plot_optimization_history(study)
    figs["intermediate-values"] = vis.plot_intermediate_values(study)
    figs["timeline"] = vis.plot_timeline(study)
    if n_done >= 2 and searched:
        with warnings.catch_warnings():  # PED-ANOVA's "importances will be equal" note on tiny studies
            warnings.filterwarnings("ignore", message=".*quantiles select the same set of trials.*")
            figs["param-importances"] = vis.plot_param_importances(study, params=searched)
        figs["parallel-coordinate"] = vis.plot_parallel_coordinate(study, params=searched)
        figs["slice"] = vis.plot_slice(study, params=searched)
    else:
        why = (f"needs at least 2 completed trials (the study has {n_done})" if n_done < 2 else
               "no parameter took more than one value among the completed trials")
        for key in ("param-importances", "parallel-coordinate", "slice"):
            skipped[key] = why
    for fig in figs.values():
        fig.update_layout(template="plotly_white", height=max(fig.layout.height or 0, 420))
    return figs, skipped
