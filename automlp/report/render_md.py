"""The same facts as Markdown, readable in a terminal or a pull request."""

from __future__ import annotations

import math


def cell(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x).replace("|", "\\|").replace("\n", " ")


def md_table(head: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(cell(c) for c in r) + " |" for r in rows), ""]


def render_md(f: dict, skipped: dict | None = None) -> str:
    rows, v = f["rows"], f["verdict"]
    counts = ", ".join(f"{k.lower()} {n}" for k, n in f["trials"].items())
    out = [f"# automlp report: {cell(f['study'])}", "",
           f"- data: {cell(f['data'])} ({f['task']}; rows train/val/test {rows['train']}/{rows['val']}/"
           f"{rows['test']}; {f['n_features']} features after preprocessing)",
           f"- metric: {f['metric']} ({f['direction']}); trials: {counts}; device {f['device']}", "",
           f"**Verdict: {v['verdict'].upper()}.** {v['text'][:1].upper()}{v['text'][1:]}", ""]
    b = f["best"]
    if b is None:
        return "\n".join(out) + "\n"
    out += [f"## Best model: trial #{b['trial']}", "",
            f"{b['architecture']}, {b['n_params']:,} parameters; {b['epochs_trained']} of at most {b['max_epochs']} "
            f"epochs (stop: {b['stop_reason']}; best validation epoch {b['best_epoch']}); training took "
            f"{b['train_time_s']:.2f} s (seed {b['seed']}).", ""]
    out += md_table(["layer", "units", "activation", "dropout", "parameters"],
                    [[r["layer"], r["units"], r["activation"], r["dropout"] or "", f"{r['params']:,}"]
                     for r in b["layers"]])
    out += md_table(["hyperparameter", "value"], [[k, val] for k, val in b["params"].items()])
    metrics = list(b["scores"]["val"])
    out += md_table(["split", *metrics], [[s, *(b["scores"][s].get(m) for m in metrics)]
                                          for s in ("train", "val", "test")])
    out += _final(f, metrics)
    out += ["## Overfitting diagnostics", ""]
    out += [f"- **{x['name']}** ({x['status']}): {x['text']}" for x in f["findings"]] + [""]
    st = f["stability"]
    out += md_table(["seed", f"validation {f['metric']}", f"test {f['metric']}"],
                    [[s, a, t] for s, a, t in zip(st["seeds"], st["val"], st["test"])])
    rs = f["rescore"]
    out += ["## Top trials", ""]
    head = ["trial", f"validation {f['metric']}", "parameters", "architecture", "epochs (best)"]
    if rs["done"]:
        head += [f"{rs['folds']}-fold mean", "± std"]
    table_rows = []
    for r in f["top"]:
        row = [f"#{r['trial']}" + (" (k-fold winner)" if rs["done"] and r["trial"] == rs["winner"] else ""),
               r["value"], f"{r['n_params']:,}", r["architecture"], f"{r['epochs']} ({r['best_epoch']})"]
        table_rows.append(row + ([r["cv_mean"], r["cv_std"]] if rs["done"] else []))
    out += md_table(head, table_rows)
    if not rs["done"]:
        out += [f"No k-fold rescoring: {rs['why']}.", ""]
    out += [f"Chosen model: trial #{f['choice']['trial']} ({f['choice']['by']}).", ""]
    out += _predictions(f)
    if skipped:
        out += ["Optuna plots not drawn: " + "; ".join(f"{k} ({why})" for k, why in skipped.items()), ""]
    out += ["Figures (learning curves, capacity vs gap, predictions and Optuna's study plots) are in report.html.", ""]
    return "\n".join(out)


def _final(f: dict, metrics: list[str]) -> list[str]:
    """The shipped model (study.final) next to the best trial, on the test split."""
    s = f.get("final")
    if not s:
        return []
    b = f["best"]
    trials = ", ".join(f"#{t}" for t in sorted({m["trial"] for m in s["members"]}))
    out = [f"## Shipped model: {s['kind']} ({len(s['members'])} networks; trials {trials})", ""]
    out += md_table(["test split", *metrics], [[f"best trial #{b['trial']}", *(b["scores"]["test"].get(m)
                                                                                 for m in metrics)],
                                               [f"shipped ({s['kind']})", *(s["scores"]["test"].get(m)
                                                                           for m in metrics)]])
    return out + ([cell(s["note"]), ""] if s.get("note") else [])


def _predictions(f: dict) -> list[str]:
    p = f["predictions"]
    out = ["## Predictions on the test split", ""]
    if f["task"] == "classification":
        rep = p["report"]
        out += md_table(["class", "precision", "recall", "F1", "support"],
                        [[k, x["precision"], x["recall"], x["f1-score"], int(x["support"])]
                         for k, x in rep.items() if isinstance(x, dict)])
        out += ["Confusion matrix (rows: true, columns: predicted):", ""]
        out += md_table(["", *p["labels"]], [[lab, *row] for lab, row in zip(p["labels"], p["confusion"])])
        if p.get("roc"):
            out += [f"ROC AUC (positive class {cell(p['roc']['positive'])}): {p['roc']['auc']:.4f}", ""]
        return out
    res = [a - q for a, q in zip(p["actual"], p["predicted"])]
    mean = sum(res) / len(res)
    out += [f"Residuals of {cell(p['target'])} on {len(res)} test rows: mean {mean:+.4g}, "
            f"largest |residual| {max(map(abs, res)):.4g}.", ""]
    return out
