"""Validating a parsed spec (errors with file:line and YAML path), loading a spec file, command-line
overrides, and the spec as plain data or JSON Schema."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from automlp.errors import SpecError
from automlp.spec.params import Param
from automlp.spec.parse import _parse_yaml
from automlp.spec.sections import CLASSIFICATION_METRICS, REGRESSION_METRICS, Spec, StudySpec, TrainingSpec

MAX_SHOWN = 20  # errors listed in a SpecError's message; the rest are counted (all are in `.errors`)

_BOUND_WORDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
                "less_than_equal": ("<=", "le")}
_TYPE_WORDS = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
               "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
               "bool_parsing": "true or false", "string_type": "text", "list_type": "a list"}


def _format_error(err: dict, fname: str, lines: dict) -> tuple[int, str]:
    """One error as `file:line yaml.path: message`, and its line (0 when unknown) to sort by."""
    loc = [str(p) for p in err["loc"]]
    ctx = err.get("ctx") or {}
    msg = err["msg"]
    if err["type"] == "automlp_at":
        loc = ctx["at"].split(".")
    elif ctx.get("sub"):
        loc += ctx["sub"].split(".")
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        valid = list(parent.model_fields) if parent else []
        near = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.6)
        msg = f"unknown key; did you mean '{near[0]}'?" if near else \
            f"unknown key; valid keys are: {', '.join(valid)}"
    elif err["type"] == "missing":
        msg = "is required"
    elif err["type"] in _BOUND_WORDS:
        op, key = _BOUND_WORDS[err["type"]]
        bound = ctx.get(key)
        bound = f"{bound:g}" if isinstance(bound, (int, float)) else bound
        msg = f"must be {op} {bound} (got {err.get('input')!r})"
    elif err["type"] in _TYPE_WORDS:
        msg = f"must be {_TYPE_WORDS[err['type']]} (got {err.get('input')!r})"
    elif err["type"] in ("literal_error", "enum"):
        given = err.get("input")
        expected = ctx.get("expected", "")
        choices = re.findall(r"'([^']+)'", expected)
        near = difflib.get_close_matches(str(given), choices, n=1)
        tip = f"did you mean '{near[0]}'? " if near else ""
        msg = f"unknown value {given!r}; {tip}Valid: {', '.join(choices)}"
    elif err["type"] == "model_type" or err["type"] == "dict_type":
        msg = f"must be a mapping of keys to values (got {err.get('input')!r})"
    line = None
    for n in range(len(loc), -1, -1):
        if tuple(loc[:n]) in lines:
            line = lines[tuple(loc[:n])]
            break
    where = f"{fname}:{line}" if line else fname
    path = ".".join(loc)
    return line or 0, f"{where} {path}: {msg}" if path else f"{where} {msg}"


def spec_error(errors: list[tuple[int, str]]) -> SpecError:
    """Every error of a spec in one SpecError, in file order (by line; ties in the order found); its message
    lists the first MAX_SHOWN and counts the rest."""
    ordered = list(dict.fromkeys(msg for _, msg in sorted(errors, key=lambda e: e[0])))
    shown = ordered[:MAX_SHOWN]
    if len(ordered) > MAX_SHOWN:
        shown.append(f"... and {len(ordered) - MAX_SHOWN} more")
    return SpecError("\n".join(shown), errors=ordered)


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = Spec
    for part in loc:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def validate_spec_dict(raw: Any, fname: str = "spec", lines: dict | None = None, base_dir: Path | None = None,
                       default_name: str = "study") -> Spec:
    """Validate a parsed spec document; errors become one SpecError listing every problem."""
    lines = lines or {}
    if not isinstance(raw, dict):
        kind = type(raw).__name__ if raw is not None else "empty"
        raise SpecError(f"{fname}:1 the spec must be a mapping with sections data, space, training, study, output "
                        f"(got a {kind})")
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as e:
        raise spec_error([_format_error(err, fname, lines) for err in e.errors()]) from None
    if spec.study.name is None:
        spec.study.name = default_name
    if spec.data.path is not None and base_dir is not None and not spec.data.path.is_absolute():
        spec.data.path = (base_dir / spec.data.path).resolve()
    return spec


def check_metric_fits(metric: str, task: str) -> None:
    """Refuse a metric of the other task (the task may have been inferred from the data)."""
    fits = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if metric not in fits:
        raise SpecError(f"study.metric: {metric!r} does not fit this {task} task (inferred from the target); "
                        f"use one of {', '.join(fits)}, or set data.task")


def load_spec(path: str | Path) -> Spec:
    """Read, parse and validate a spec file. Relative data paths resolve against the spec's folder."""
    path = Path(path)
    fname = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder; give the path of a .yaml spec file") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes().count(b"\n", 0, e.start) + 1
        raise SpecError(f"{fname}:{line} not UTF-8 text (byte {e.start}); save the spec as UTF-8") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec ({e.strerror})") from None
    raw, lines = _parse_yaml(text, fname)
    default_name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "study"
    return validate_spec_dict(raw, fname, lines, path.resolve().parent, default_name)


def apply_overrides(spec: Spec, n_trials: int | None = None, timeout: float | None = None,
                    storage: str | None = None, device: str | None = None, seed: int | None = None,
                    data_path: Path | None = None) -> Spec:
    """Command-line flags override the spec; they are validated like the spec's own fields."""
    if n_trials is not None:
        spec.study.n_trials = n_trials
    if timeout is not None:
        spec.study.timeout = timeout
    if seed is not None:
        spec.study.seed = seed
    errors = []
    for flag, value, check in (("--storage", storage, StudySpec._storage), ("--device", device, TrainingSpec._device)):
        try:
            if value is not None:
                check(value)
        except PydanticCustomError as e:
            errors.append(f"{flag}: {e.message()}")
    if errors:
        raise SpecError("\n".join(errors), errors=errors)
    if storage is not None:
        spec.study.set_storage(storage, "--storage")
    if device is not None:
        spec.training.device = device
    if data_path is not None:
        spec.data.path, spec.data.dataset = data_path.resolve(), None
    return spec


def _param_raw(p: Param) -> Any:
    if p.is_fixed:
        return p.value
    if p.choices is not None:
        return list(p.choices)
    raw = {"low": p.low, "high": p.high, "log": p.log}
    return raw if p.step is None else raw | {"step": p.step}


def dump_spec(spec: Spec) -> dict:
    """The spec as plain JSON-able data that `validate_spec_dict` accepts again (stored with the study)."""
    raw = spec.model_dump(mode="json", exclude={"space"})
    raw["space"] = {name: _param_raw(p) for name, p in spec.space.params().items()}
    raw["space"]["width_mode"] = spec.space.width_mode
    return raw


def spec_json_schema() -> dict:
    """The JSON Schema of a spec, for editors (yaml-language-server) to autocomplete."""
    return Spec.model_json_schema()
