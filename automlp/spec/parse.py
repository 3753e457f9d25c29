"""YAML reading for specs: safe_load with duplicate keys refused, and a map of YAML paths to line numbers."""

from __future__ import annotations

import re
from typing import Any

import yaml

from automlp.errors import SpecError



class _Loader(yaml.SafeLoader):
    """safe_load, plus refusal of duplicate keys (plain PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)  # resolve `<<: *anchor` merge keys before looking at the keys
        seen: dict = {}
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError(f"{{file}}:{line} a key must be a plain name, not a list or a mapping")
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                raise SpecError(f"{{file}}:{line} the key {key_node.value!r} is read as a {type(key).__name__}; "
                                "keys are names such as 'depth' (quote it if you mean the text)")
            if key in seen:
                raise SpecError(f"{{file}}:{key_node.start_mark.line + 1} duplicate key '{key}' "
                                f"(first at line {seen[key]}); keep one of them")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _line_map(node, path=(), out=None) -> dict[tuple, int]:
    """YAML path (keys and list indices) -> 1-based line, for pointing errors at lines."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            _line_map(v, path + (key,), out)
            out[path + (key,)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, path + (str(i),), out)
    return out


def _parse_yaml(text: str, fname: str) -> tuple[Any, dict]:
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            raise SpecError(f"{fname}: the spec is empty; it needs at least a 'data' section")
        data = loader.construct_document(node)
    except SpecError as e:
        raise SpecError(str(e).replace("{file}", fname)) from None
    except yaml.constructor.ConstructorError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 0
        tag = re.search(r"tag '([^']+)'", str(e.problem))
        what = f"the tag {tag.group(1)!r} is" if tag else "this value is"
        raise SpecError(f"{fname}:{line} {what} not allowed: specs are plain YAML (no Python objects or tags)") from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise SpecError(f"{fname}:{line} the character {e.character!r} is not allowed in YAML; remove it") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        lines = re.split(r"\r\n|[\n\r\x85\u2028\u2029]", text)  # YAML's line breaks
        at = lines[mark.line] if mark and mark.line < len(lines) else ""
        if "\\t" in problem or "\t" in at:
            raise SpecError(f"{fname}{line} tabs are not allowed in YAML indentation; indent with spaces") from None
        raise SpecError(f"{fname}{line} not valid YAML: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, _line_map(node)


