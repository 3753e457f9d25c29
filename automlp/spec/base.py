"""The base of every spec section: checks across fields that run even when some fields failed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from automlp.spec.params import Problems, _err, raise_problems


class _Section(BaseModel):
    """A section of the spec. Its checks across fields (`_checks`) run even when some fields failed, on the
    fields that did not, so one run reports every error of the spec rather than the first."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @classmethod
    def _checks(cls, v: dict) -> Problems:
        """Problems across fields, as (YAML path below the section, message). `v` maps each field that
        validated to its value; a field that failed is absent, and checks that need it are skipped."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _every_error(cls, raw: Any, handler) -> Any:
        if not isinstance(raw, dict):  # an instance (assignment, a default) or a wrong type: nothing to add
            return handler(raw)
        try:
            out = handler(raw)
        except ValidationError as e:
            errors = e.errors()
            if any(not err["loc"] for err in errors):
                raise
            problems = cls._checks(cls._good_fields(raw, errors))
            if not problems:
                raise
            raise ValidationError.from_exception_data(cls.__name__, [_again(err) for err in errors] + [
                InitErrorDetails(type=_err(msg), loc=tuple(sub.split(".")) if sub else (), input=raw)
                for sub, msg in problems]) from None
        raise_problems(cls._checks(dict(out)), raw, cls.__name__)
        return out

    @classmethod
    def _good_fields(cls, raw: dict, errors: list[dict]) -> dict:
        """The fields that validated (validated again one by one: the whole model failed), with defaults. A
        section with a failed field becomes a namespace of its own good fields (checks use getattr)."""
        bad: dict[str, list[dict]] = {}
        for err in errors:
            bad.setdefault(str(err["loc"][0]), []).append({**err, "loc": err["loc"][1:]})
        obj = cls.model_construct()
        out = {}
        for name, field in cls.model_fields.items():
            if name not in bad:
                try:
                    if name in raw:
                        cls.__pydantic_validator__.validate_assignment(obj, name, raw[name])
                except ValidationError:  # valid only together with other fields: leave it to them
                    continue
                if hasattr(obj, name):
                    out[name] = getattr(obj, name)
            elif _is_section(field.annotation) and isinstance(raw.get(name), dict) and \
                    all(err["loc"] for err in bad[name]):
                out[name] = SimpleNamespace(**field.annotation._good_fields(raw[name], bad[name]))
        return out


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, _Section)


def _again(err: dict) -> InitErrorDetails:
    """A collected error, to be raised again along with more."""
    ctx = err.get("ctx")
    kind = PydanticCustomError(err["type"], err["msg"], ctx) if err["type"].startswith("automlp") else err["type"]
    out = InitErrorDetails(type=kind, loc=err["loc"], input=err.get("input"))
    if ctx is not None and not err["type"].startswith("automlp"):
        out["ctx"] = ctx
    return out
