"""The spec loader: valid specs load, and every invalid one gets the documented message with its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from automlp.errors import SpecError
from automlp.spec import load_spec

from conftest import REPO, run_cli

VALID = """\
data:
  dataset: sklearn:iris
space:
  depth: {low: 1, high: 3}
  activation: [relu, tanh]
  lr: {low: 0.0001, high: 0.1, log: true}
study:
  n_trials: 5
"""


def load_text(tmp_path: Path, text: str, name: str = "iris.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return load_spec(p)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(SpecError) as e:
        load_text(tmp_path, text)
    return str(e.value)


def test_valid_spec_loads_with_defaults(tmp_path):
    spec = load_text(tmp_path, VALID)
    assert spec.study.name == "iris"  # from the file name
    assert spec.space.activation.choices == ("relu", "tanh")
    assert spec.space.lr.log and spec.space.lr.low == 0.0001
    assert spec.training.early_stopping.patience == 10
    # what the spec leaves out comes from the default space: the blocks and the portfolio (README, "Beyond the
    # plain MLP": chosen by bench/quality.py)
    assert spec.space.optimizer.choices == ("adam", "adamw")
    assert spec.space.embedding.choices == ("none", "periodic", "piecewise_linear")
    assert spec.space.arch.choices == ("mlp", "tabm_mini")
    assert spec.space.numeric_preprocessing.choices == ("standard", "quantile", "robust_clip")
    assert (spec.space.dropout.low, spec.space.dropout.high) == (0.0, 0.3)
    assert spec.study.portfolio and spec.study.final == "ensemble"


@pytest.mark.parametrize("example", sorted((REPO / "search_spaces").glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_are_valid(example):
    spec = load_spec(example)
    assert spec.study.name == example.stem


CASES = [
    # (what, spec text, exact message)
    ("log range with low <= 0",
     VALID.replace("{low: 0.0001, high: 0.1, log: true}", "{low: 0, high: 0.1, log: true}"),
     "iris.yaml:6 space.lr.low: must be > 0 when log: true (got 0)"),
    ("unknown key with suggestion",
     VALID.replace("  activation:", "  activaton:"),
     "iris.yaml:5 space.activaton: unknown key; did you mean 'activation'?"),
    ("unknown section with suggestion",
     VALID + "studdy:\n  seed: 1\n",
     "iris.yaml:9 studdy: unknown key; did you mean 'study'?"),
    ("low > high",
     VALID.replace("{low: 1, high: 3}", "{low: 3, high: 1}"),
     "iris.yaml:4 space.depth: low must be < high (got low=3, high=1); for a fixed value write it directly"),
    ("unknown activation with suggestion",
     VALID.replace("[relu, tanh]", "[relu, tanhh]"),
     "iris.yaml:5 space.activation.1: unknown value 'tanhh'; did you mean 'tanh'? "
     "Valid: identity, logistic, tanh, relu, leaky_relu, gelu, silu"),
    ("wrong type",
     VALID.replace("{low: 1, high: 3}", '"three"'),
     "iris.yaml:4 space.depth: must be an integer (got 'three')"),
    ("huge width",
     VALID.replace("space:\n", "space:\n  width: 1000000000\n"),
     "iris.yaml:4 space.width: must be in [1, 16384] (got 1000000000); wider layers would not fit in memory "
     "for a tabular MLP: use at most 16384"),
    ("empty choices",
     VALID.replace("[relu, tanh]", "[]"),
     "iris.yaml:5 space.activation: the list of choices is empty; give at least one value"),
    ("batch size 0",
     VALID.replace("space:\n", "space:\n  batch_size: 0\n"),
     "iris.yaml:4 space.batch_size: must be in [1, 1e+06] (got 0)"),
    ("metric that does not fit the task",
     VALID.replace("data:\n", "data:\n  task: classification\n").replace("n_trials: 5", "n_trials: 5\n  metric: r2"),
     "iris.yaml:10 study.metric: metric 'r2' does not fit a classification task; use one of accuracy, "
     "balanced_accuracy, f1_macro, roc_auc, log_loss"),
    ("unknown metric",
     VALID.replace("n_trials: 5", "n_trials: 5\n  metric: acuracy"),
     "iris.yaml:9 study.metric: unknown metric 'acuracy'; did you mean 'accuracy'? Valid: accuracy, "
     "balanced_accuracy, f1_macro, roc_auc, log_loss, rmse, mae, r2"),
    ("unknown sampler",
     VALID.replace("n_trials: 5", "n_trials: 5\n  sampler: tpee"),
     "iris.yaml:9 study.sampler.type: unknown value 'tpee'; did you mean 'tpe'? Valid: tpe, random, qmc, "
     "cmaes, grid"),
    ("unknown storage scheme",
     VALID.replace("n_trials: 5", "n_trials: 5\n  storage: redis://localhost"),
     "iris.yaml:9 study.storage: unknown storage scheme 'redis'; use sqlite:///file.db, postgresql://..., "
     "mysql+pymysql://..., journal:///path/file.journal or grpc://host:port"),
    ("no data source",
     VALID.replace("  dataset: sklearn:iris\n", "  target: y\n"),
     "iris.yaml:1 data: give exactly one of 'dataset' (e.g. sklearn:iris) or 'path'"),
    ("duplicate key",
     VALID.replace("study:\n", "study:\n  n_trials: 3\n"),
     "iris.yaml:9 duplicate key 'n_trials' (first at line 8); keep one of them"),
    ("a list, not a mapping", "- data\n- space\n",
     "iris.yaml:1 the spec must be a mapping with sections data, space, training, study, output (got a list)"),
    ("empty file", "", "iris.yaml: the spec is empty; it needs at least a 'data' section"),
    ("tabs", "data:\n\tdataset: sklearn:iris\n",
     "iris.yaml:2 tabs are not allowed in YAML indentation; indent with spaces"),
    ("python tag", "data: !!python/object/apply:os.system ['echo hi']\n",
     "iris.yaml:1 the tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed: specs are plain YAML "
     "(no Python objects or tags)"),
]


@pytest.mark.parametrize("what,text,message", CASES, ids=[c[0] for c in CASES])
def test_invalid_spec_message(tmp_path, what, text, message):
    assert error_of(tmp_path, text) == message


def test_validate_command_exit_codes(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(VALID)
    r = run_cli("validate", good)
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout
    bad = tmp_path / "iris.yaml"
    bad.write_text(VALID.replace("  activation:", "  activaton:"))
    r = run_cli("validate", bad)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: iris.yaml:5 space.activaton: unknown key; did you mean 'activation'?"
    assert "Traceback" not in r.stderr


def test_schema_command_prints_json_schema():
    r = run_cli("schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert set(schema["properties"]) >= {"data", "space", "training", "study", "output"}
    lr = schema["$defs"]["SpaceSpec"]["properties"]["lr"]  # a value, a list, or a range: editors offer all three
    assert [s.get("type") for s in lr["anyOf"]] == ["number", "array", "object"]
    assert "sigmoid" in schema["$defs"]["SpaceSpec"]["properties"]["activation"]["anyOf"][0]["enum"]
