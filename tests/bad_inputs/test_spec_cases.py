"""The catalogue of bad specs: each is checked by `automlp validate` (no data is read) with its exact message."""

from __future__ import annotations

import pytest

from catalogue import Case, assert_error, run_cases

IRIS = "data:\n  dataset: sklearn:iris\n"


def spec(text: str, case_id: str, expected: str) -> Case:
    return Case(case_id, {"spec.yaml": text}, expected)


SPEC_CASES = [
    # --- the file itself
    spec("", "empty_file", "spec.yaml: the spec is empty; it needs at least a 'data' section"),
    spec("# only a comment\n", "only_comments", "spec.yaml: the spec is empty; it needs at least a 'data' section"),
    Case("missing_file", {}, "spec.yaml: no such spec file"),
    Case("spec_is_a_folder", {"spec.yaml": "<dir>"}, "spec.yaml: is a folder; give the path of a .yaml spec file"),
    Case("not_utf8", {"spec.yaml": b"data:\n  dataset: sklearn:iris # caf\xe9\n"},
         "spec.yaml:2 not UTF-8 text (byte 35); save the spec as UTF-8"),
    spec("data: [unclosed\n", "not_yaml",
         "spec.yaml:2 not valid YAML: expected ',' or ']', but got '<stream end>'"),
    spec("- data\n- space\n", "yaml_list",
         "spec.yaml:1 the spec must be a mapping with sections data, space, training, study, output (got a list)"),
    spec("just some words\n", "yaml_scalar",
         "spec.yaml:1 the spec must be a mapping with sections data, space, training, study, output (got a str)"),
    spec("data:\n\tdataset: sklearn:iris\n", "tabs",
         "spec.yaml:2 tabs are not allowed in YAML indentation; indent with spaces"),
    spec(IRIS + "space:\n  depth: 2\n  depth: 3\n", "duplicate_keys",
         "spec.yaml:5 duplicate key 'depth' (first at line 4); keep one of them"),
    spec("? [a, b]\n: 1\n", "list_as_key", "spec.yaml:1 a key must be a plain name, not a list or a mapping"),
    spec("on: 1\n" + IRIS, "yaml11_bool_key",
         "spec.yaml:1 the key 'on' is read as a bool; keys are names such as 'depth' (quote it if you mean the text)"),
    # --- structure
    spec("space: {}\n", "no_data_section", "spec.yaml:1 data: is required"),
    spec(IRIS + "trainig: {}\n", "unknown_section", "spec.yaml:3 trainig: unknown key; did you mean 'training'?"),
    spec(IRIS + "space:\n  activaton: relu\n", "unknown_key_suggestion",
         "spec.yaml:4 space.activaton: unknown key; did you mean 'activation'?"),
    spec(IRIS + "colour: red\n", "unknown_section_no_suggestion",
         "spec.yaml:3 colour: unknown key; valid keys are: data, space, training, study, output, report"),
    spec(IRIS + "space: 3\n", "section_not_mapping", "spec.yaml:3 space: must be a mapping of keys to values (got 3)"),
    spec("data:\n  dataset: sklearn:iris\n  path: x.csv\n  target: y\n", "two_data_sources",
         "spec.yaml:1 data: give exactly one of 'dataset' (e.g. sklearn:iris) or 'path'"),
    spec("data:\n  path: x.csv\n", "csv_without_target",
         "spec.yaml:1 data.target: is required with a CSV or Parquet file: name the column to predict"),
    spec("data:\n  dataset: sklearn:irs\n", "unknown_dataset",
         "spec.yaml:2 data.dataset: unknown data set 'sklearn:irs'; did you mean 'sklearn:iris'?"),
    # --- values of the space
    spec(IRIS + "space:\n  depth: \"three\"\n", "wrong_type", "spec.yaml:4 space.depth: must be an integer (got 'three')"),
    spec(IRIS + "space:\n  lr: {low: 0.1, high: 0.01}\n", "low_above_high",
         "spec.yaml:4 space.lr: low must be < high (got low=0.1, high=0.01); for a fixed value write it directly"),
    spec(IRIS + "space:\n  lr:\n    low: 0\n    high: 0.1\n    log: true\n", "log_with_low_zero",
         "spec.yaml:5 space.lr.low: must be > 0 when log: true (got 0)"),
    spec(IRIS + "space:\n  lr: {low: 1.0e-4, hihg: 0.1}\n", "range_key_typo",
         "spec.yaml:4 space.lr.hihg: unknown key; did you mean 'high'?"),
    spec(IRIS + "space:\n  width: []\n", "empty_choices",
         "spec.yaml:4 space.width: the list of choices is empty; give at least one value"),
    spec(IRIS + "space:\n  batch_size: 0\n", "batch_size_zero", "spec.yaml:4 space.batch_size: must be in [1, 1e+06] (got 0)"),
    spec(IRIS + "space:\n  width: [-8, 16]\n", "negative_width", "spec.yaml:4 space.width.0: must be in [1, 16384] (got -8)"),
    spec(IRIS + "space:\n  width: 1000000000\n", "huge_width",
         "spec.yaml:4 space.width: must be in [1, 16384] (got 1000000000); wider layers would not fit in memory for "
         "a tabular MLP: use at most 16384"),
    spec(IRIS + "space:\n  depth: 32\n  width: 16384\n", "huge_network",
         "spec.yaml:5 space.width: the largest network of the space (depth 32, width 16384) has about 8.3e+09 weights "
         "(33.3 GB in float32, several times that while training); lower the largest depth or width so that "
         "(depth - 1) x width^2 <= 2.5e+08"),
    spec(IRIS + "space:\n  dropout: 1.0\n", "dropout_one", "spec.yaml:4 space.dropout: must be in [0, 1) (got 1.0)"),
    spec(IRIS + "space:\n  optimizer: adamx\n", "unknown_optimizer",
         "spec.yaml:4 space.optimizer: unknown value 'adamx'; did you mean 'adam'? Valid: adam, adamw, sgd, lbfgs"),
    spec(IRIS + "space:\n  activation: [relu, sigmod]\n", "unknown_activation",
         "spec.yaml:4 space.activation.1: unknown value 'sigmod'; did you mean 'sigmoid'? Valid: identity, logistic, "
         "tanh, relu, leaky_relu, gelu, silu"),
    # --- study, training, output
    spec(IRIS + "study:\n  metric: acuracy\n", "unknown_metric",
         "spec.yaml:4 study.metric: unknown metric 'acuracy'; did you mean 'accuracy'? Valid: accuracy, "
         "balanced_accuracy, f1_macro, roc_auc, log_loss, rmse, mae, r2"),
    spec(IRIS + "study:\n  sampler: tpee\n", "unknown_sampler",
         "spec.yaml:4 study.sampler.type: unknown value 'tpee'; did you mean 'tpe'? Valid: tpe, random, qmc, cmaes, grid"),
    spec(IRIS + "study:\n  pruner: {type: medain}\n", "unknown_pruner",
         "spec.yaml:4 study.pruner.type: unknown value 'medain'; did you mean 'median'? Valid: median, "
         "successive_halving, hyperband, none"),
    spec("data:\n  dataset: sklearn:iris\n  task: classification\nstudy:\n  metric: r2\n", "metric_wrong_task",
         "spec.yaml:5 study.metric: metric 'r2' does not fit a classification task; use one of accuracy, balanced_accuracy, "
         "f1_macro, roc_auc, log_loss"),
    spec(IRIS + "study:\n  storage: redis://admin:hunter2@localhost:6379\n", "unknown_storage_scheme",
         "spec.yaml:4 study.storage: unknown storage scheme 'redis'; use sqlite:///file.db, postgresql://..., "
         "mysql+pymysql://... or journal:///path/file.journal"),
    spec(IRIS + "study:\n  name: ../evil\n", "study_name_with_slash",
         "spec.yaml:4 study.name: '../evil' is not a valid study name; use letters, digits, '_', '-' and '.' "
         "(at most 100, starting with a letter or digit)"),
    spec(IRIS + "study:\n  n_trials: 0\n", "n_trials_zero",
         "spec.yaml:4 study.n_trials: must be >= 1 (got 0)"),
    spec(IRIS + "training:\n  early_stopping: {patience: ten}\n", "patience_not_a_number",
         "spec.yaml:4 training.early_stopping.patience: must be an integer (got 'ten')"),
    spec(IRIS + "study:\n  timeout: -5\n", "negative_timeout", "spec.yaml:4 study.timeout: must be > 0 (got -5)"),
    spec(IRIS + "training:\n  device: gpu\n", "unknown_device",
         "spec.yaml:4 training.device: unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps"),
    # --- security: no code from a spec, no writes outside the current folder
    spec("data: !!python/object/apply:os.system [\"touch pwned\"]\n", "python_object_tag",
         "spec.yaml:1 the tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed: specs are plain YAML "
         "(no Python objects or tags)"),
    spec(IRIS + "space:\n  activation: \"__import__('os').system('touch pwned')\"\n", "code_in_a_field",
         "spec.yaml:4 space.activation: unknown value \"__import__('os').system('touch pwned')\"; Valid: identity, "
         "logistic, tanh, relu, leaky_relu, gelu, silu"),
    spec(IRIS + "output:\n  dir: ../../etc\n", "output_dir_climbs_out",
         "spec.yaml:4 output.dir: '../../etc' climbs out of the current folder; a relative output.dir must stay "
         "inside it: give an absolute path, or set output.allow_outside: true"),
    spec(IRIS + "output:\n  dir: studies/../../x\n", "output_dir_climbs_out_midway",
         "spec.yaml:4 output.dir: 'studies/../../x' climbs out of the current folder; a relative output.dir must "
         "stay inside it: give an absolute path, or set output.allow_outside: true"),
    spec(IRIS + "study:\n  storage: sqlite:///../../automlp.db\n", "storage_file_climbs_out",
         "spec.yaml:4 study.storage: the file '../../automlp.db' climbs out of the current folder; a relative "
         "path must stay inside it: give an absolute path, or set output.allow_outside: true"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_cases(SPEC_CASES, tmp_path_factory.mktemp("spec_cases"))


@pytest.mark.parametrize("case", SPEC_CASES, ids=lambda c: c.id)
def test_bad_spec(case: Case, results):
    proc, d = results[case.id]
    assert_error(proc, case.expected.format(dir=d), case.code)
    assert not (d / "pwned").exists()  # nothing in a spec is ever run


def test_allow_outside_lets_a_relative_path_climb_out(tmp_path):
    from catalogue import run_automlp

    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "spec.yaml").write_text(IRIS + "output:\n  dir: ../elsewhere\n  allow_outside: true\n")
    proc = run_automlp(["validate", "spec.yaml"], tmp_path / "cwd")
    assert proc.returncode == 0, proc.stderr
    assert "spec.yaml: valid." in proc.stdout


@pytest.mark.parametrize("path, refused", [("../x", True), ("a/../../x", True), ("..", True), ("/abs/x", False),
                                           ("studies/./a/../b", False), ("..studies", False), ("a/..", False)])
def test_which_paths_climb_out(path, refused):
    from automlp.spec import climbs_out

    assert climbs_out(path) is refused
