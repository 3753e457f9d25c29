"""The study report: collect the facts (collect.py, verdict.py), then draw them (figures.py, render_*.py).

`build_report(spec, ...)` writes `report.html`, `report.md` and `report.json` into the study folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from automlp.data import PreparedData, prepare_data, resolve_device, to_tensors
from automlp.errors import StorageError
from automlp.report.summary import summary_markdown
from automlp.search.run import set_threads
from automlp.search.study import CHOICE_ATTR, SPEC_ATTR, load_study, storage_url, study_metric
from automlp.search.trial import TrialRun
from automlp.spec import Spec, dump_spec, validate_spec_dict
from automlp.storage import redact

__all__ = ["ReportResult", "build_report", "record_spec", "spec_of_study"]


@dataclass
class ReportResult:
    html_path: Path
    md_path: Path
    json_path: Path
    facts: dict
    html_bytes: int

    @property
    def verdict(self) -> str:
        return self.facts["verdict"]["verdict"]


def record_spec(study: optuna.Study, spec: Spec) -> None:
    """Keep the spec with the study, so `automlp report` works from the study folder or the storage alone."""
    study.set_user_attr(SPEC_ATTR, dump_spec(spec))


def spec_of_study(study: optuna.Study, where: str) -> Spec:
    raw = study.user_attrs.get(SPEC_ATTR)
    if raw is None:
        raise StorageError(f"study '{study.study_name}' in {where} does not record its spec (it was not run by "
                           "this automlp version); pass the spec file instead: automlp report SPEC.yaml")
    return validate_spec_dict(raw, fname=f"spec stored in study '{study.study_name}'")


def build_report(spec: Spec, study: optuna.Study | None = None, data: PreparedData | None = None,
                 best_run: TrialRun | None = None, out_dir: Path | None = None) -> ReportResult:
    """Collect the facts of a finished (or partly finished) study and write report.html/.md/.json.

    `data` and `best_run` may come from the search that just ran, which saves re-reading and retraining."""
    # imported here: scipy and plotly cost seconds, and `automlp search --no-report` needs only the summary
    from automlp.report.collect import collect
    from automlp.report.figures import optuna_figures
    from automlp.report.render_html import render_html
    from automlp.report.render_md import render_md

    start = time.perf_counter()
    if study is None:
        study = load_study(storage_url(spec), spec.study.name)
    set_threads(spec)
    device = resolve_device(spec.training.device)
    data = data if data is not None else prepare_data(spec.data, spec.study.seed)
    metric = study_metric(study, spec, data.task)
    facts = collect(study, spec, data, to_tensors(data, device), metric, best_run)
    facts["storage"] = redact(storage_url(spec))
    t0 = time.perf_counter()
    study_figs, skipped = optuna_figures(study)
    page = render_html(facts, study_figs, skipped)
    text = render_md(facts, skipped)
    facts["timings"]["render_s"] = time.perf_counter() - t0
    out = Path(out_dir) if out_dir is not None else spec.study_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "report.html", out / "report.md", out / "report.json"
    paths[0].write_text(page, encoding="utf-8")
    paths[1].write_text(text, encoding="utf-8")
    facts["timings"]["total_s"] = time.perf_counter() - start
    paths[2].write_text(json.dumps(facts, indent=1, default=str) + "\n", encoding="utf-8")
    _record_choice(study, spec, facts, out)
    return ReportResult(*paths, facts=facts, html_bytes=len(page.encode("utf-8")))


def _record_choice(study: optuna.Study, spec: Spec, facts: dict, out: Path) -> None:
    """With report.use_rescored_choice, the k-fold winner becomes the study's chosen trial (the export reads it)."""
    if facts["best"] is None or not spec.report.use_rescored_choice:
        return
    choice = facts["choice"]
    study.set_user_attr(CHOICE_ATTR, choice["trial"])
    summary_path = out / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        summary["choice"] = choice
        tmp = out / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        tmp.replace(summary_path)
        (out / "summary.md").write_text(summary_markdown(summary) + f"\nChosen model: trial #{choice['trial']} "
                                        f"({choice['by']}); see report.md.\n")
