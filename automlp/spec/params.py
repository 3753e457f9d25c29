"""Hyperparameters of the space: `Param`, the per-parameter rules, and `parse_param` (a YAML value -> Param)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from automlp.registry import (ACTIVATION_ALIASES, ACTIVATIONS, ARCHS, EMBEDDINGS, LR_SCHEDULES,  # noqa: F401
                              NUMERIC_PREPROCESSING, OPTIMIZER_ALIASES, OPTIMIZERS)

# label smoothing helps accuracy-type metrics and hurts probability-quality ones (RealMLP's ablation): it is
# sampled only when the study's metric is one of these
LABEL_SMOOTHING_METRICS = ("accuracy", "balanced_accuracy", "f1_macro")
# the space's blocks fixed off: the plain MLP of earlier versions (3-20x faster per trial on a CPU: the hand-written
# kernel), as the README tells users to write it; the portfolio's `mlp` entry, benchmarks and quick tests use it
PLAIN_MLP = {"optimizer": "adam", "activation": "relu", "dropout": 0.0, "lr_schedule": "constant", "beta2": 0.999,
             "numeric_preprocessing": "standard", "embedding": "none", "feature_scaling": False, "arch": "mlp"}

MAX_WIDTH = 16384
MAX_DEPTH = 32


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    """One hyperparameter of the space: exactly one of `value`, `choices` or a range (`low`, `high`)."""

    name: str
    kind: Literal["int", "float", "cat"]
    value: Any = None
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def is_fixed(self) -> bool:
        return self.choices is None and self.low is None

    def grid_values(self) -> list | None:
        """The finite set of values, or None for a continuous range."""
        if self.is_fixed:
            return [self.value]
        if self.choices is not None:
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is not None:
            n = int(round((self.high - self.low) / self.step))
            return [self.low + i * self.step for i in range(n + 1)]
        return None

    def describe(self) -> str:
        if self.is_fixed:
            return repr(self.value)
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        extra = (", log" if self.log else "") + (f", step {self.step:g}" if self.step else "")
        return f"[{self.low:g}, {self.high:g}{extra}]"


def _err(msg: str) -> PydanticCustomError:
    return PydanticCustomError("automlp", "{msg}", {"msg": msg})


def _sub_error(sub: str, msg: str) -> PydanticCustomError:
    # `sub` extends the error's YAML path below the field (e.g. "low"), so messages point at the line.
    return PydanticCustomError("automlp", "{msg}", {"msg": msg, "sub": sub})


Problems = list[tuple[str, str]]  # (YAML path below the field or section, message), in the order found


def raise_problems(problems: Problems, raw: Any, title: str = "spec") -> None:
    """Raise every problem at once: a ValidationError raised inside a validator joins the model's own errors,
    each at its own YAML path, so one run reports them all."""
    if problems:
        raise ValidationError.from_exception_data(title, [
            InitErrorDetails(type=_err(msg), loc=tuple(sub.split(".")) if sub else (), input=raw)
            for sub, msg in problems])


class _Bad(Exception):
    def __init__(self, sub: str, msg: str):
        self.sub, self.msg = sub, msg


def _check_number(name: str, kind: str, x: Any, bounds: tuple, sub: str) -> float:
    lo, hi, lo_open, hi_open = bounds
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        want = "an integer" if kind == "int" else "a number"
        raise _Bad(sub, f"must be {want} (got {x!r})")
    if kind == "int" and isinstance(x, float):
        if not x.is_integer():
            raise _Bad(sub, f"must be an integer (got {x!r})")
        x = int(x)
    if (x < lo or (lo_open and x == lo)) or (x > hi or (hi_open and x == hi)):
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        hint = ""
        if name == "width" and x > hi:
            hint = f"; wider layers would not fit in memory for a tabular MLP: use at most {hi}"
        raise _Bad(sub, f"must be in {left}{lo:g}, {hi:g}{right} (got {x!r}){hint}")
    return x


def _check_choice(x: Any, sub: str, allowed: tuple, aliases: dict) -> Any:
    if allowed and isinstance(x, str):
        x = aliases.get(x.lower(), x.lower())
    if allowed and x not in allowed:
        names = [str(a) for a in allowed] + list(aliases)
        near = difflib.get_close_matches(str(x), names, n=1)
        tip = f"did you mean '{near[0]}'? " if near else ""
        raise _Bad(sub, f"unknown value {x!r}; {tip}Valid: {', '.join(map(str, allowed))}")
    return x


def parse_param(name: str, kind: str, raw: Any, bounds: tuple | None = None, allowed: tuple = (),
                aliases: dict | None = None) -> Param:
    """Turn a YAML value into a Param. Every problem of the value is reported (a ValidationError, raised
    inside a validator), each at the sub-key it concerns (`low`, `step`, a list index)."""
    problems: Problems = []
    param = None

    def check(x: Any, sub: str) -> Any:
        try:
            if kind == "cat":
                return _check_choice(x, sub, allowed, aliases or {})
            return _check_number(name, kind, x, bounds, sub)
        except _Bad as e:
            problems.append((e.sub, e.msg))
            return _BAD

    if isinstance(raw, dict):
        param = _parse_range(name, kind, raw, check, problems)
    elif isinstance(raw, list):
        param = _parse_choices(name, kind, raw, check, problems)
    elif raw is None:
        problems.append(("", "needs a value, a list of choices or a range {low, high}"))
    else:
        param = Param(name, kind, value=check(raw, ""))
    raise_problems(problems, raw)
    return param


_BAD = object()  # a value that failed its check (its problem is recorded)


def _parse_range(name: str, kind: str, raw: dict, check, problems: Problems) -> Param | None:
    if kind == "cat":
        problems.append(("", "a categorical parameter takes a value or a list of choices, not a range"))
        return None
    meant = set()  # keys a typo stands for: their absence is the same problem, reported once
    for key in sorted(map(str, set(raw) - {"low", "high", "log", "step"})):
        near = difflib.get_close_matches(key, ["low", "high", "log", "step"], n=1)
        tip = f"did you mean '{near[0]}'?" if near else "valid keys are low, high, log, step"
        problems.append((key, f"unknown key; {tip}"))
        meant.update(near)
    for key in [key for key in ("low", "high") if key not in raw and key not in meant]:
        problems.append(("", f"a range needs '{key}' (got keys: {', '.join(map(str, raw)) or 'none'})"))
    log = raw.get("log", False)
    if not isinstance(log, bool):
        problems.append(("log", f"must be true or false (got {log!r})"))
    low, high = raw.get("low"), raw.get("high")
    if log is True and isinstance(low, (int, float)) and not isinstance(low, bool) and low <= 0:
        problems.append(("low", f"must be > 0 when log: true (got {low!r})"))
        low = _BAD
    else:
        low = check(low, "low") if "low" in raw else _BAD
    high = check(high, "high") if "high" in raw else _BAD
    if low is not _BAD and high is not _BAD and low >= high:
        problems.append(("", f"low must be < high (got low={low!r}, high={high!r}); "
                             "for a fixed value write it directly"))
    step = raw.get("step")
    if step is not None:
        if log is True:
            problems.append(("step", "cannot be combined with log: true; drop one of them"))
        elif isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            problems.append(("step", f"must be a number > 0 (got {step!r})"))
        elif kind == "int" and not float(step).is_integer():
            problems.append(("step", f"must be an integer for '{name}' (got {step!r})"))
    return Param(name, kind, low=low, high=high, log=log, step=step)


def _parse_choices(name: str, kind: str, raw: list, check, problems: Problems) -> Param | None:
    if not raw:
        problems.append(("", "the list of choices is empty; give at least one value"))
        return None
    n_before = len(problems)
    values = tuple(check(x, str(i)) for i, x in enumerate(raw))
    if len(problems) > n_before:
        return None
    if len(set(values)) != len(values):
        problems.append(("", f"the list of choices has duplicates (got {list(raw)}); list each value once"))
    if len(values) == 1:
        return Param(name, kind, value=values[0])
    return Param(name, kind, choices=values)


# (kind, bounds (low, high, low_open, high_open), allowed, aliases)
PARAM_RULES: dict[str, tuple] = {
    "depth": ("int", (0, MAX_DEPTH, False, False), (), None),
    "width": ("int", (1, MAX_WIDTH, False, False), (), None),
    "activation": ("cat", None, ACTIVATIONS, ACTIVATION_ALIASES),
    "optimizer": ("cat", None, OPTIMIZERS, OPTIMIZER_ALIASES),
    "lr": ("float", (0.0, 10.0, True, False), (), None),
    "alpha": ("float", (0.0, 100.0, False, False), (), None),
    "batch_size": ("int", (1, 1_000_000, False, False), (), None),
    "dropout": ("float", (0.0, 1.0, False, True), (), None),
    "lr_schedule": ("cat", None, LR_SCHEDULES, None),
    "max_epochs": ("int", (1, 100_000, False, False), (), None),
    "momentum": ("float", (0.0, 1.0, False, False), (), None),
    "nesterov": ("cat", None, (True, False), None),
    "power_t": ("float", (0.0, 10.0, False, False), (), None),
    "numeric_preprocessing": ("cat", None, NUMERIC_PREPROCESSING, None),
    "embedding": ("cat", None, EMBEDDINGS, None),
    "d_embedding": ("int", (1, 256, False, False), (), None),
    "frequency_init_scale": ("float", (0.0, 100.0, True, False), (), None),
    "n_bins": ("int", (2, 1024, False, False), (), None),
    "feature_scaling": ("cat", None, (True, False), None),
    "arch": ("cat", None, ARCHS, None),
    "k_ensemble": ("int", (1, 256, False, False), (), None),
    "beta2": ("float", (0.0, 1.0, True, True), (), None),
    "label_smoothing": ("float", (0.0, 1.0, False, True), (), None),
}


def _param_json_schema(kind: str, bounds: tuple | None, allowed: tuple) -> dict:
    """What editors should offer for a parameter: a value, a list of choices, or a range."""
    if kind == "cat":
        one = {"enum": list(allowed)}
        return {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}
    one: dict = {"type": "integer" if kind == "int" else "number"}
    lo, hi, lo_open, hi_open = bounds
    one["exclusiveMinimum" if lo_open else "minimum"] = lo
    one["exclusiveMaximum" if hi_open else "maximum"] = hi
    rng = {"type": "object", "additionalProperties": False, "required": ["low", "high"],
           "properties": {"low": one, "high": one, "log": {"type": "boolean"}, "step": {"type": "number"}}}
    return {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}, rng]}
