"""Every error of a spec at once: one line each, in file order, from `load_spec`, `automlp validate` and
`automlp search` alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from automlp.errors import SpecError
from automlp.spec import load_spec, validate_spec_dict

from conftest import run_cli

# five sections, nine mistakes; the metric check (across sections) and the grace period check (across fields)
# run although other fields of their sections failed
MANY = """\
data:
  dataset: sklearn:irs
  test_size: 2
space:
  activaton: [relu, tanh]
  lr: {low: 0, high: 0.1, log: true}
  width: [8, 8.5]
training:
  device: gpu
study:
  n_trials: 0
  grace_period: 5
output:
  dir: ../x
"""
MANY_ERRORS = [
    "many.yaml:2 data.dataset: unknown data set 'sklearn:irs'; did you mean 'sklearn:iris'?",
    "many.yaml:3 data.test_size: must be < 1 (got 2)",
    "many.yaml:5 space.activaton: unknown key; did you mean 'activation'?",
    "many.yaml:6 space.lr.low: must be > 0 when log: true (got 0)",
    "many.yaml:7 space.width.1: must be an integer (got 8.5)",
    "many.yaml:9 training.device: unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps",
    "many.yaml:11 study.n_trials: must be >= 1 (got 0)",
    "many.yaml:12 study.grace_period: must be > heartbeat_interval (got grace_period=5, heartbeat_interval=10); "
    "use at least twice the interval",
    "many.yaml:14 output.dir: '../x' climbs out of the current folder; a relative output.dir must stay inside it: "
    "give an absolute path, or set output.allow_outside: true",
]


def write(tmp_path: Path, text: str, name: str = "many.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_spec_raises_one_spec_error_with_every_error_in_file_order(tmp_path):
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, MANY))
    assert e.value.errors == MANY_ERRORS
    assert str(e.value) == "\n".join(MANY_ERRORS)


@pytest.mark.parametrize("command", [["validate"], ["search", "--quiet"]])
def test_validate_and_search_print_every_error_and_exit_2(tmp_path, command):
    proc = run_cli(*command, write(tmp_path, MANY), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {line}" for line in MANY_ERRORS]
    assert not (tmp_path / "studies").exists()


def test_the_issue_example_reports_both_mistakes(tmp_path):
    text = "data:\n  dataset: sklearn:iris\nspace:\n  activaton: [relu, tanh]\n  lr: {low: 0, high: 0.1, log: true}\n"
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, text, "s.yaml"))
    assert e.value.errors == ["s.yaml:4 space.activaton: unknown key; did you mean 'activation'?",
                              "s.yaml:5 space.lr.low: must be > 0 when log: true (got 0)"]


def test_every_problem_of_one_parameter(tmp_path):
    """A range with several wrong sub-keys, and a list with several wrong values: each one is named."""
    text = ("data:\n  dataset: sklearn:iris\nspace:\n  depth: {low: 1, hihg: 3, step: 0.5}\n"
            "  activation: [relu, sigmod, tanhh]\n")
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, text, "s.yaml"))
    valid = "Valid: identity, logistic, tanh, relu, leaky_relu, gelu, silu"
    assert e.value.errors == [
        "s.yaml:4 space.depth.hihg: unknown key; did you mean 'high'?",
        "s.yaml:4 space.depth.step: must be an integer for 'depth' (got 0.5)",
        f"s.yaml:5 space.activation.1: unknown value 'sigmod'; did you mean 'sigmoid'? {valid}",
        f"s.yaml:5 space.activation.2: unknown value 'tanhh'; did you mean 'tanh'? {valid}",
    ]


def test_checks_across_fields_run_when_a_field_of_the_section_failed(tmp_path):
    """data.target is required with a CSV whether or not data.val_size is valid; the metric/task check runs
    although space failed."""
    text = ("data:\n  path: d.csv\n  task: classification\n  val_size: -1\nspace:\n  depth: x\n"
            "study:\n  metric: r2\n")
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, text, "s.yaml"))
    assert e.value.errors == [
        "s.yaml:1 data.target: is required with a CSV or Parquet file: name the column to predict",
        "s.yaml:4 data.val_size: must be > 0 (got -1)",
        "s.yaml:6 space.depth: must be an integer (got 'x')",
        "s.yaml:8 study.metric: metric 'r2' does not fit a classification task; use one of accuracy, "
        "balanced_accuracy, f1_macro, roc_auc, log_loss",
    ]


def test_a_long_list_is_cut_at_twenty_with_a_count_of_the_rest():
    raw = {"data": {"dataset": "sklearn:iris"}, "space": {f"typo_{i:02d}": 1 for i in range(25)}}
    with pytest.raises(SpecError) as e:
        validate_spec_dict(raw, "s.yaml")
    assert len(e.value.errors) == 25
    lines = str(e.value).splitlines()
    assert len(lines) == 21 and lines[-1] == "... and 5 more"
    assert lines[0].startswith("s.yaml space.typo_00: unknown key; valid keys are: depth, width")
