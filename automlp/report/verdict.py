"""The diagnostics as pure functions: numbers in, a `Finding` (status and a sentence with the numbers) out.

No study, no torch, no plotting here, so every rule can be tested on hand-made numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# The gap is measured on a metric with a fixed scale ([0, 1] for a perfect model), so one threshold fits all:
# the study metric when it has one, else its bounded companion.
BOUNDED = {"accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy", "f1_macro": "f1_macro",
           "roc_auc": "roc_auc", "r2": "r2", "log_loss": "accuracy", "rmse": "r2", "mae": "r2"}
MIN_SKILL = 0.25  # a training score closing less than this share of baseline -> perfect is "barely learned"
TAIL_SHARE = 0.1  # "still improving" = best validation loss within the last 10% of epochs at the cap
VERDICTS = ("fits well", "overfits", "underfits", "unstable")


@dataclass(frozen=True)
class Finding:
    """One diagnostic: `name`, `status` ("ok", "overfits", "underfits", "unstable" or "info"), a sentence."""

    name: str
    status: str
    text: str

    def as_dict(self) -> dict:
        return asdict(self)


def gap_metric(metric: str) -> str:
    return BOUNDED[metric]


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def gap_finding(train: float, val: float, test: float | None, metric: str, threshold: float,
                se: float = 0.0, n_val: int | None = None) -> Finding:
    """Overfits when the training score beats the validation score by more than `threshold` plus one standard
    error of the validation score (`se`, bootstrapped): a small validation split alone does not make a verdict."""
    gap = train - val
    vt = "" if test is None else f" (validation - test gap: {val - test:+.3f})"
    rows = f" on {n_val} rows" if n_val else ""
    words = (f"{metric} {_f(train)} on the training split against {_f(val)} on validation: gap {gap:+.3f} "
             f"(validation standard error ±{se:.3f}{rows})")
    if gap > threshold + se:
        return Finding("gap", "overfits", f"{words}. The gap exceeds the threshold {threshold:g} by more than the "
                                          "validation noise: the model fits its training rows much better than rows "
                                          f"it has not seen{vt}.")
    if gap > threshold:
        return Finding("gap", "ok", f"{words}. The gap is above the threshold {threshold:g} but within one standard "
                                    "error of it: not clear evidence of overfitting (more validation rows would "
                                    f"tell){vt}.")
    return Finding("gap", "ok", f"{words}, within the threshold {threshold:g}{vt}.")


def curve_finding(curves: dict, best_epoch: int, n_epochs: int, max_epochs: int, stop_reason: str,
                  patience: int | None) -> Finding:
    """Where validation loss bottomed out, whether early stopping fired, and whether training was cut short
    while still improving (underfits: more epochs would help)."""
    val = curves.get("val_loss") or []
    train = curves.get("train_loss") or []
    if not val:
        return Finding("curves", "info", "no learning curves were recorded for this trial.")
    low = min(range(len(val)), key=val.__getitem__)
    rise = (val[-1] - val[low]) / abs(val[low]) if val[low] else 0.0
    stop = {"early_stopping": f"early stopping fired at epoch {n_epochs} (patience {patience})",
            "max_epochs": f"training ran to the cap of {max_epochs} epochs",
            "pruned": f"the trial was pruned at epoch {n_epochs}",
            "diverged": f"training diverged at epoch {n_epochs}",
            "timeout": f"the study's timeout stopped it at epoch {n_epochs}"}.get(stop_reason, stop_reason)
    words = (f"validation loss bottomed out at epoch {low + 1} ({_f(val[low], 4)}); {stop}; "
             f"the weights of epoch {best_epoch} were kept")
    if len(val) > low + 1:
        off = f"{rise + 1:.1f} times its minimum" if rise > 1 else f"{rise:+.0%} off its minimum"
        words += f"; by the last epoch validation loss was {off}"
    if train:
        words += f" while training loss went from {_f(train[0], 4)} to {_f(train[-1], 4)}"
    tail = max(2, math.ceil(TAIL_SHARE * n_epochs))
    if stop_reason == "max_epochs" and low + 1 > n_epochs - tail and n_epochs > 2:
        return Finding("curves", "underfits", f"{words}. Its minimum came within the last {tail} epochs before "
                                              "the cap, so it was still improving when training was cut off: more "
                                              "epochs (space.max_epochs) would likely help.")
    return Finding("curves", "ok", words + ".")


def skill(score: float, baseline: float) -> float:
    """Share of the distance from a constant predictor's score to a perfect 1.0 that a score covers."""
    return (score - baseline) / (1.0 - baseline) if baseline < 1.0 else 0.0


def fit_finding(train: float, baseline: float, metric: str) -> Finding:
    """Underfits when even the training score is barely better than predicting a constant."""
    s = skill(train, baseline)
    words = (f"on the training split the model scores {metric} {_f(train)} against {_f(baseline)} for a constant "
             f"prediction (it closes {s:.0%} of the distance to a perfect score)")
    if s < MIN_SKILL:
        return Finding("fit", "underfits", words + f", under {MIN_SKILL:.0%}: the model has barely learned; try "
                                                   "more capacity, a higher learning rate or more epochs.")
    return Finding("fit", "ok", words + ".")


def stability_finding(scores: list[float], lead: float | None, metric: str, runner_up: int | None,
                      tolerance: float = 0.0, test_se: float = 0.0, n_test: int | None = None) -> Finding:
    """Unstable when the score moves across seeds (std) by more than the best trial's lead over the runner-up,
    by more than `tolerance` times the mean score (ties on a small validation split make the lead 0), and by
    more than the test score's own bootstrap standard error `test_se` (on 30 test rows one row moves accuracy
    by 0.033: a spread that size says nothing about the seed)."""
    if len(scores) < 2:
        return Finding("stability", "info", "the best configuration was trained with one seed only "
                                            "(report.seeds: 1); no stability estimate.")
    n = len(scores)
    mean = sum(scores) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in scores) / (n - 1))
    rel = std / abs(mean) if mean else math.inf
    words = (f"retrained with {n} seeds, test {metric} is {_f(mean)} ± {_f(std)} (std, {rel:.1%} of the mean; "
             f"min {_f(min(scores))}, max {_f(max(scores))})")
    if lead is None:
        return Finding("stability", "info", words + "; there is no runner-up to compare with.")
    versus = f"its lead over the runner-up (trial #{runner_up}) on validation is {_f(lead)}"
    if std > lead and rel > tolerance and std > test_se:
        return Finding("stability", "unstable", f"{words}; {versus}. The seed moves the score more than the lead, "
                                                "so this trial won partly by the luck of its seed.")
    if std > lead and rel > tolerance:
        rows = f" on {n_test} rows" if n_test else ""
        return Finding("stability", "ok", f"{words}; {versus}: the seed moves the score more than the lead, but "
                                          f"less than the test score's own sampling error (±{_f(test_se)}{rows}), "
                                          "so the seed's effect cannot be told from the noise of the test split.")
    if std > lead:
        return Finding("stability", "ok", f"{words}; {versus}: the seed moves the score more than the lead, but by "
                                          f"less than {tolerance:.0%} of it (report.stable_spread), so the top "
                                          "trials are simply as good as each other.")
    return Finding("stability", "ok", f"{words}; {versus}, larger than the seed's effect.")


def capacity_finding(rho: float | None, p_value: float | None, n: int) -> Finding:
    """Does the train-validation loss gap grow with the parameter count, across trials (Spearman)?"""
    if rho is None or math.isnan(rho):
        return Finding("capacity", "info", f"{n} trials with distinct sizes: too few to relate capacity to the gap.")
    words = f"across {n} trials the Spearman rank correlation of parameter count with the loss gap is {rho:+.2f} " \
            f"(p = {p_value:.2g})"
    if rho > 0.3 and p_value < 0.05:
        return Finding("capacity", "info", words + ": larger networks overfit more here; prefer the smaller "
                                                   "end of the space.")
    if rho < -0.3 and p_value < 0.05:
        return Finding("capacity", "info", words + ": larger networks generalised better here.")
    return Finding("capacity", "info", words + ": no clear relation between size and overfitting.")


def optimism_finding(best_val: float, test: float, metric: str, direction: str,
                     cv: tuple[float, float] | None, n_val: int) -> Finding:
    """The best of many validation scores is biased upwards; show how far the test score is from it."""
    worse = (best_val - test) if direction == "maximize" else (test - best_val)
    words = (f"the best validation {metric} {_f(best_val)} (on {n_val} rows, chosen among all trials) against "
             f"{_f(test)} on the untouched test split: the test score is {abs(worse):.3f} "
             f"{'worse' if worse > 0 else 'better'}")
    if cv is not None:
        words += f"; k-fold cross-validation of the same configuration gives {_f(cv[0])} ± {_f(cv[1])}"
    return Finding("optimism", "info", words + ".")


def overall_verdict(findings: list[Finding]) -> tuple[str, str]:
    """(verdict, sentence): overfits, then underfits, then unstable, else fits well; the first such finding
    explains it."""
    for verdict in ("overfits", "underfits", "unstable"):
        hits = [f for f in findings if f.status == verdict]
        if hits:
            return verdict, hits[0].text
    gap = next((f for f in findings if f.name == "gap"), None)
    return "fits well", gap.text if gap else "no diagnostic found a problem."


def rescore_finding(winner: int, best: int, top: list[dict], folds: int, metric: str, use_choice: bool) -> Finding:
    """Name the configuration that wins k-fold cross-validation among the top trials."""
    by = {row["trial"]: row for row in top}
    w = by[winner]
    n = sum(r["cv_mean"] is not None for r in top)
    words = (f"{folds}-fold cross-validation on train+validation of the top {n} trials ranks trial #{winner} first "
             f"({metric} {_f(w['cv_mean'])} ± {_f(w['cv_std'])})")
    if winner == best:
        return Finding("rescore", "info", words + ", the same trial the validation split chose.")
    b = by[best]
    choice = ("the summary and the export use it (report.use_rescored_choice: true)" if use_choice else
              "set report.use_rescored_choice: true to export it instead")
    return Finding("rescore", "info", f"{words}, not the validation winner #{best} ({_f(b['cv_mean'])} ± "
                                      f"{_f(b['cv_std'])}); {choice}.")


def smaller_finding(top: list[dict], noise: float | None, metric: str) -> Finding | None:
    """A smaller network among the top trials whose validation score is within noise of the best."""
    if not top or noise is None or top[0].get("n_params") is None:
        return None
    best = top[0]
    near = [r for r in top[1:] if r.get("n_params") is not None and r["n_params"] < best["n_params"]
            and abs(best["value"] - r["value"]) <= noise]
    if not near:
        return None
    r = min(near, key=lambda row: row["n_params"])
    return Finding("smaller", "info", f"trial #{r['trial']} has {r['n_params']:,} parameters "
                                      f"({r['n_params'] / best['n_params']:.0%} of the best's {best['n_params']:,}) "
                                      f"and scores {metric} {_f(r['value'])}, within the seed noise ({_f(noise)}) "
                                      f"of the best {_f(best['value'])}: a smaller model that is as good.")
