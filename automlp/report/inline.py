"""The short report a notebook shows inline (`Result._repr_html_`): the verdict, the best model and its
scores, the top trials. Drawn from the report's facts when the report was built, else from the summary; the
full page (with plots) is `Result.report_html()`."""

from __future__ import annotations

from automlp.report.render_html import COLORS, _best_section, _top_section, e, num, table

CSS = ("<style>.automlp td,.automlp th{border:1px solid #ddd;padding:2px 8px;text-align:left}"
       ".automlp table{border-collapse:collapse;margin:4px 0 10px}.automlp td.n{text-align:right}"
       ".automlp .verdict{color:#fff;padding:8px 12px;border-radius:6px}"
       ".automlp .verdict b{text-transform:uppercase;margin-right:8px}</style>")


def _verdict(facts: dict | None, interrupted: bool) -> str:
    if facts is None:
        why = "the search was interrupted" if interrupted else "no report was built (report=False)"
        return f'<p class="verdict" style="background:#555"><b>no verdict</b>{e(why)}; ' \
               "Result.report_html() builds it</p>"
    v = facts["verdict"]
    findings = "".join(f"<li><b>{e(x['name'])}</b> ({e(x['status'])}): {e(x['text'])}</li>"
                       for x in facts["findings"])
    return (f'<p class="verdict" style="background:{COLORS.get(v["verdict"], "#555")}"><b>{e(v["verdict"])}</b>'
            f"{e(v['text'])}</p>" + (f"<ul>{findings}</ul>" if findings else ""))


def _summary_best(s: dict) -> str:
    b = s["best"]
    params = table(["hyperparameter", "value"], [[k, num(v)] for k, v in b["params"].items()])
    metrics = list(b["scores"]["val"])
    scores = table(["split", *metrics], [[split, *(b["scores"][split].get(m) for m in metrics)]
                                         for split in ("train", "val", "test")], set(range(1, len(metrics) + 1)))
    return (f"<h3>Best model: trial #{b['trial']}</h3><p>{e(b['architecture'])}, {b['n_params']:,} parameters; "
            f"{b['epochs_trained']} of at most {b['max_epochs']} epochs (best {b['best_epoch']}).</p>"
            f"{params}<h4>Scores</h4>{scores}")


def inline_html(summary: dict, facts: dict | None, paths: dict[str, object], interrupted: bool = False) -> str:
    """An HTML fragment (no scripts) for a notebook cell."""
    counts = ", ".join(f"{k.lower()} {n}" for k, n in summary["trials"].items())
    head = (f"<h3>automlp study {e(summary['study'])}</h3><p>{e(summary['data'])} ({e(summary['task'])}) · metric "
            f"{e(summary['metric'])} ({e(summary['direction'])}) · trials: {e(counts)} · "
            f"{summary['wall_time_s']:.1f} s on {e(summary['device'])}</p>")
    body = [head, _verdict(facts, interrupted)]
    if summary["best"] is None:
        body.append("<p>No trial finished, so there is no best model yet.</p>")
    elif facts is not None and facts.get("best") is not None:
        body += [_best_section(facts, {}).replace("<h2", "<h3").replace("</h2>", "</h3>"),
                 _top_section(facts).replace("<h2", "<h3").replace("</h2>", "</h3>")]
    else:
        body.append(_summary_best(summary))
    files = [[k, str(v)] for k, v in paths.items() if v is not None]
    if files:
        body.append(table(["file", "path"], files))
    return f'{CSS}<div class="automlp">{"".join(body)}</div>'
