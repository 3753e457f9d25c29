"""`automlp status`: trials by state, the best so far, and the workers seen recently, read from the storage."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from automlp.search.study import METRIC_ATTR
from automlp.search.trial import TrialRecord
from automlp.storage import WORKER_ATTR


def study_status(study: optuna.Study, recent_s: float = 600.0) -> dict:
    """What `automlp status` shows: trials by state, the best so far, and the workers seen recently."""
    trials = study.get_trials(deepcopy=False)
    counts = {s.name: 0 for s in TrialState}
    for t in trials:
        counts[t.state.name] += 1
    best = None
    try:
        b = study.best_trial
        best = {"trial": b.number, "value": b.value, "params": b.params}
    except ValueError:
        pass
    now = time.time()
    workers: dict[tuple, dict] = {}
    for t in trials:
        rec = t.system_attrs.get(WORKER_ATTR)
        if not rec:
            continue
        seen = max(filter(None, [rec.get("t"), t.datetime_complete and t.datetime_complete.timestamp()]))
        w = workers.setdefault((rec.get("host"), rec.get("pid")), {
            "host": rec.get("host"), "pid": rec.get("pid"), "trials": 0, "running": [], "last_seen": 0.0})
        w["trials"] += 1
        w["last_seen"] = max(w["last_seen"], seen)
        if t.state == TrialState.RUNNING:
            w["running"].append(t.number)
    recent = sorted((w for w in workers.values() if now - w["last_seen"] <= recent_s or w["running"]),
                    key=lambda w: -w["last_seen"])
    for w in recent:
        w["last_seen_s_ago"] = round(now - w.pop("last_seen"), 1)
    return {
        "study": study.study_name, "metric": study.user_attrs.get(METRIC_ATTR),
        "direction": study.direction.name.lower(), "trials": {k: v for k, v in counts.items() if v},
        "skipped": sum(1 for t in trials if TrialRecord.read(t).skipped),
        "retried": sum(1 for t in trials if "failed_trial" in t.system_attrs),
        "best": best, "workers": recent, "n_workers_seen": len(workers),
        "last_activity": _last_activity(trials),
    }


def _last_activity(trials) -> str | None:
    times = [t.datetime_complete or t.datetime_start for t in trials if t.datetime_start]
    return max(times).isoformat(timespec="seconds") if times else None


def status_text(s: dict, storage: str, n_total: int | None = None) -> str:
    counts = ", ".join(f"{k.lower()} {v}" for k, v in s["trials"].items()) or "no trials"
    finished = s["trials"].get("COMPLETE", 0) + s["trials"].get("PRUNED", 0)
    budget = f" ({finished}/{n_total} finished)" if n_total else ""
    lines = [f"study {s['study']} in {storage}", f"  trials: {counts}{budget}"]
    if s["retried"] or s["skipped"]:
        lines.append(f"  retries of trials whose worker died: {s['retried']}; skipped at the budget: {s['skipped']}")
    if s["best"]:
        b = s["best"]
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["params"].items())
        lines.append(f"  best: trial #{b['trial']} {s['metric'] or 'value'} {b['value']:.4g} ({params})")
    else:
        lines.append("  best: none yet")
    if s["last_activity"]:
        lines.append(f"  last activity: {s['last_activity']}")
    lines.append(f"  workers seen in the last 10 min: {len(s['workers'])} (of {s['n_workers_seen']} in all)")
    for w in s["workers"]:
        running = f"running trial #{', #'.join(map(str, w['running']))}" if w["running"] else "idle or gone"
        lines.append(f"    {w['host']} pid {w['pid']}: {w['trials']} trials, {running}, "
                     f"last seen {w['last_seen_s_ago']:.0f} s ago")
    return "\n".join(lines)
