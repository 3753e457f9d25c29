"""Property tests of the spec loader: whatever the YAML, `load_spec` returns a Spec or raises SpecError with a
message that starts at the file's name; never another exception, never an unformatted template."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automlp.errors import SpecError
from automlp.spec import Spec, load_spec

VALID = {
    "data": {"dataset": "sklearn:iris", "test_size": 0.2, "val_size": 0.2, "max_categories": 50},
    "space": {"depth": {"low": 1, "high": 3}, "width": [16, 32, 64], "activation": ["relu", "tanh"],
              "optimizer": "adam", "lr": {"low": 1.0e-4, "high": 0.1, "log": True}, "batch_size": [32, 64],
              "dropout": {"low": 0.0, "high": 0.5}, "max_epochs": 50},
    "training": {"device": "cpu", "early_stopping": {"patience": 5, "monitor": "val_loss"}},
    "study": {"metric": "accuracy", "n_trials": 10, "sampler": "tpe", "pruner": {"type": "median"}},
    "output": {"dir": "studies"},
}

FIELD_NAMES = ["data", "space", "depth", "width", "low", "high", "log", "step", "dataset", "path", "target",
               "metric", "sampler", "type", "dir", "allow_outside", "storage", "name", "lr", "activation"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20), st.sampled_from(FIELD_NAMES),
    st.sampled_from(["sklearn:iris", "relu", "adam", "tpe", "../../etc", "/tmp/x", "sqlite:///a.db",
                     "postgresql://u:pw@h/db", "/a\x00b", "d\x00.csv", "1e-3", "yes", "~", "", "nan", ".inf"]),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8), st.integers(-3, 3), st.booleans())
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(keys, inner, max_size=4)), max_leaves=12)

FAST = settings(max_examples=int(__import__("os").environ.get("SPEC_PROP_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "prop.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            spec = load_spec(path)
        except SpecError as e:
            msg = str(e)
            assert msg.startswith("prop.yaml"), msg
            assert "!r}" not in msg and "{file}" not in msg, msg
        else:
            assert isinstance(spec, Spec)


def dump(doc) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@FAST
@given(values)
def test_random_yaml_documents(doc):
    check(dump(doc))


@FAST
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_random_text(text):
    check(text)


def paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, prefix + (i,))


ALL_PATHS = list(paths(VALID))[1:]


@FAST
@given(st.lists(st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(["set", "delete", "add"]), keys, values),
                min_size=1, max_size=3))
def test_mutations_of_a_valid_spec(mutations):
    doc = copy.deepcopy(VALID)
    for path, how, key, value in mutations:
        parent = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            if how == "set":
                parent[path[-1]] = value
            elif how == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[key] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    check(dump(doc))


def test_the_valid_spec_is_valid():
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "ok.yaml").write_text(dump(VALID))
        assert load_spec(Path(d) / "ok.yaml").space.depth.high == 3
