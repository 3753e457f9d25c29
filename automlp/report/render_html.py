"""Draw the facts as one self-contained HTML file: plotly.js embedded once, no CDN, every user string escaped."""

from __future__ import annotations

import html
import math

import plotly.io as pio
from plotly.offline import get_plotlyjs

from automlp.report.figures import own_figures

CONFIG = {"displaylogo": False, "responsive": True}
COLORS = {"fits well": "#1b7f3b", "overfits": "#b3261e", "underfits": "#a15c00", "unstable": "#6d3fb3",
          "n/a": "#555"}
STATUS = {"ok": "✓", "info": "•", "overfits": "✗", "underfits": "✗", "unstable": "✗"}
CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:24px;margin:8px 0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px;background:#fff}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top}th{background:#f0f0f0}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.verdict{color:#fff;padding:14px 18px;border-radius:8px;font-size:17px}
.verdict b{font-size:22px;text-transform:uppercase;margin-right:10px}
.meta{color:#555}.fig{background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:12px 0;padding:4px}
ul.findings li{margin:6px 0}.skip{color:#777;font-style:italic}
nav a{margin-right:14px}
"""


def e(s) -> str:
    return html.escape(str(s), quote=True)


def num(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return e(x)
    return f"{x:,}" if isinstance(x, int) else f"{x:.{digits}g}"


def table(head: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td class="n">{num(c)}</td>' if i in numeric else f"<td>{e(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def fig_html(key: str, fig) -> str:
    return '<div class="fig">' + pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=key,
                                              config=CONFIG) + "</div>"


def _best_section(f: dict, figs: dict) -> str:
    b = f["best"]
    layers = table(["layer", "units", "activation", "dropout", "parameters"],
                   [[r["layer"], r["units"], r["activation"], r["dropout"] or "", r["params"]] for r in b["layers"]],
                   {1, 4})
    params = table(["hyperparameter", "value"], [[k, num(v)] for k, v in b["params"].items()])
    stop = "early stopping fired" if b["stop_reason"] == "early_stopping" else f"stopped: {b['stop_reason']}"
    metrics = list(b["scores"]["val"])
    scores = table(["split", *metrics], [[s, *(b["scores"][s].get(m) for m in metrics)]
                                         for s in ("train", "val", "test")], set(range(1, len(metrics) + 1)))
    return (f'<h2 id="best">Best model: trial #{b["trial"]}</h2>'
            f"<p>{e(b['architecture'])}, <b>{b['n_params']:,}</b> parameters. Trained {b['epochs_trained']} of at "
            f"most {b['max_epochs']} epochs ({e(stop)}); best validation epoch {b['best_epoch']}; training took "
            f"{b['train_time_s']:.2f} s (seed {e(b['seed'])}).</p>{layers}{params}"
            f"<h3>Scores</h3>{scores}{_final(f, metrics)}")


def _final(f: dict, metrics: list[str]) -> str:
    """The shipped model (study.final) next to the best trial, on the test split."""
    s, b = f.get("final"), f["best"]
    if not s:
        return ""
    trials = ", ".join(f"#{t}" for t in sorted({m["trial"] for m in s["members"]}))
    rows = [[f"best trial #{b['trial']}", *(b["scores"]["test"].get(m) for m in metrics)],
            [f"shipped ({s['kind']})", *(s["scores"]["test"].get(m) for m in metrics)]]
    note = f"<p>{e(s['note'])}</p>" if s.get("note") else ""
    return (f"<h3>Shipped model: {e(s['kind'])} ({len(s['members'])} networks; trials {e(trials)})</h3>"
            f"{table(['test split', *metrics], rows, set(range(1, len(metrics) + 1)))}{note}")


def _diagnostics(f: dict, figs: dict) -> str:
    items = "".join(f"<li>{STATUS.get(x['status'], '•')} <b>{e(x['name'])}</b> ({e(x['status'])}): {e(x['text'])}"
                    "</li>" for x in f["findings"])
    out = [f'<h2 id="diagnostics">Overfitting diagnostics</h2><ul class="findings">{items}</ul>',
           fig_html("learning-curves", figs["learning-curves"])]
    st = f["stability"]
    out.append("<h3>Stability over seeds</h3>" + table(
        ["seed", f"validation {f['metric']}", f"test {f['metric']}"],
        [[str(s), v, t] for s, v, t in zip(st["seeds"], st["val"], st["test"])], {1, 2}))
    if "stability" in figs:
        out.append(fig_html("stability", figs["stability"]))
    out.append("<h3>Capacity vs generalization gap</h3>" + fig_html("capacity-gap", figs["capacity-gap"]))
    return "".join(out)


def _top_section(f: dict) -> str:
    rs = f["rescore"]
    head = ["trial", f"validation {f['metric']}", "parameters", "architecture", "epochs (best)"]
    if rs["done"]:
        head += [f"{rs['folds']}-fold mean", "± std"]
    rows = []
    for r in f["top"]:
        row = [f"#{r['trial']}" + (" ◀ k-fold winner" if rs["done"] and r["trial"] == rs["winner"] else ""),
               r["value"], r["n_params"], r["architecture"], f"{r['epochs']} ({r['best_epoch']})"]
        if rs["done"]:
            row += [r["cv_mean"], r["cv_std"]]
        rows.append(row)
    note = "" if rs["done"] else f'<p class="skip">No k-fold rescoring: {e(rs["why"])}.</p>'
    return (f'<h2 id="top">Top trials side by side</h2>{table(head, rows, {1, 2, 5, 6})}{note}'
            f"<p>Chosen model: trial #{f['choice']['trial']} ({e(f['choice']['by'])}).</p>")


def _predictions(f: dict, figs: dict) -> str:
    out = ['<h2 id="predictions">Predictions on the test split</h2>']
    if f["task"] == "classification":
        rep = f["predictions"]["report"]
        rows = [[k, v["precision"], v["recall"], v["f1-score"], int(v["support"])]
                for k, v in rep.items() if isinstance(v, dict)]
        if "accuracy" in rep:
            rows.append(["accuracy", "", "", rep["accuracy"], ""])
        out.append(table(["class", "precision", "recall", "F1", "support"], rows, {1, 2, 3, 4}))
        for key in ("confusion-matrix", "roc-curve"):
            if key in figs:
                out.append(fig_html(key, figs[key]))
    else:
        out += [fig_html("predicted-vs-actual", figs["predicted-vs-actual"]), fig_html("residuals", figs["residuals"])]
    return "".join(out)


TITLES = {"optimization-history": "Optimization history", "param-importances": "Parameter importances",
          "parallel-coordinate": "Parallel coordinates", "slice": "Slice plot",
          "intermediate-values": "Intermediate values (pruned trials included)", "timeline": "Timeline"}


def _study_section(study_figs: dict, skipped: dict) -> str:
    out = ['<h2 id="study">The study (Optuna\'s plots)</h2>']
    for key, title in TITLES.items():
        out.append(f"<h3>{e(title)}</h3>")
        out.append(fig_html(key, study_figs[key]) if key in study_figs else
                   f'<p class="skip">Not drawn: {e(skipped.get(key, ""))}.</p>')
    return "".join(out)


def render_html(facts: dict, study_figs: dict, skipped: dict) -> str:
    """The whole page as one string."""
    f = facts
    v = f["verdict"]
    counts = ", ".join(f"{k.lower()} {n}" for k, n in f["trials"].items())
    rows = f["rows"]
    head = (f"<h1>automlp report: {e(f['study'])}</h1><p class=\"meta\">data {e(f['data'])} ({e(f['task'])}; rows "
            f"train/val/test {rows['train']}/{rows['val']}/{rows['test']}; {f['n_features']} features after "
            f"preprocessing) · metric {e(f['metric'])} ({e(f['direction'])}) · trials: {e(counts)} · "
            f"device {e(f['device'])}</p>"
            f'<div class="verdict" id="verdict" style="background:{COLORS.get(v["verdict"], "#555")}">'
            f"<b>{e(v['verdict'])}</b>{e(v['text'][:1].upper() + v['text'][1:])}</div>")
    body = [head]
    if f["best"] is not None:
        figs = own_figures(f)
        body.append('<nav><a href="#best">best model</a><a href="#diagnostics">diagnostics</a><a href="#top">top '
                    'trials</a><a href="#predictions">predictions</a><a href="#study">study</a></nav>')
        body += [_best_section(f, figs), _diagnostics(f, figs), _top_section(f), _predictions(f, figs)]
    body.append(_study_section(study_figs, skipped))
    t = f.get("timings", {})
    body.append(f'<p class="meta">Facts collected in {t.get("collect_s", 0):.2f} s, of which retraining '
                f'{t.get("stability_s", 0) + t.get("rescore_s", 0):.2f} s (report.seeds, report.rescore_top).</p>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>automlp report: {e(f["study"])}'
            f'</title><meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style>'
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body><main>{"".join(body)}'
            "</main></body></html>")
