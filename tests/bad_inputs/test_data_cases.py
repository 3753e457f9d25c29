"""The catalogue of bad data: each case is a CSV (or another file) built here, checked by
`automlp validate --check-data` (reads, splits and preprocesses as a search would) or, where noted, by a real
`automlp search --n-trials 1`, with its exact message."""

from __future__ import annotations

import pytest

from catalogue import Case, assert_error, run_automlp, run_cases

CHECK = ["validate", "--check-data", "spec.yaml"]
SEARCH = ["search", "--n-trials", "1", "--quiet", "spec.yaml"]
TINY_SPACE = ("space:\n  depth: 1\n  width: 8\n  max_epochs: 3\n  batch_size: 16\n"
              "study:\n  sampler: random\n  pruner: none\n")


def csv(header: str, rows) -> str:
    return header + "\n" + "".join(f"{r}\n" for r in rows)


def data_case(case_id: str, data: str | bytes, expected: str, target: str = "y", extra: str = "",
              name: str = "data.csv", args: list[str] = CHECK) -> Case:
    spec = f"data:\n  path: {name}\n  target: {target}\n{extra}" + (TINY_SPACE if args is SEARCH else "")
    files = {"spec.yaml": spec} if data is None else {"spec.yaml": spec, name: data}
    return Case(case_id, files, expected, list(args))


GOOD = csv("a,b,y", (f"{i},{i % 5},{i % 2}" for i in range(40)))

DATA_CASES = [
    # --- the file
    data_case("missing_file", None, "data.path: file not found: {dir}/data.csv (a relative data.path starts at the "
              "spec's folder)"),
    data_case("path_is_a_folder", "<dir>", "data.path: {dir}/data.csv is a folder; give a CSV, Parquet or .npz file"),
    data_case("binary_file", bytes(range(256)) * 8, "data.path: data.csv is a binary file, not CSV text; give a CSV, "
              "Parquet or .npz file"),
    data_case("corrupt_parquet", bytes(range(256)) * 4, "data.path: cannot read data.parquet: Could not open Parquet "
              "input source '{dir}/data.parquet': Parquet magic bytes not found in footer. Either the file is "
              "corrupted or this is not a parquet file.", name="data.parquet"),
    data_case("corrupt_gzip", b"no gzip here", "data.path: cannot read data.csv.gz: Not a gzipped file (b'no')",
              name="data.csv.gz"),
    data_case("npz_without_arrays", b"", "data.path: cannot read data.npz as a NumPy archive (No data left in "
              "file)", name="data.npz"),
    data_case("empty_csv", "", "data.path: data.csv is empty; it needs a header row and data rows"),
    data_case("header_only", "a,b,y\n", "data.path: data.csv has a header but no data rows"),
    data_case("non_utf8", b"a,city,y\n1,Paris,0\n2,Montr\xe9al,1\n" * 20, "data.path: data.csv is not UTF-8 text "
              "(line 3, byte 0xe9); re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"),
    data_case("duplicate_columns", csv("a,b,a,y", (f"{i},{i},{i},{i % 2}" for i in range(40))),
              "data.path: data.csv has duplicate column names (a); give each column a unique name"),
    # --- the columns
    data_case("target_missing", GOOD, "data.target: column 'label' not in data.csv; columns are: a, b, y",
              target="label"),
    data_case("semicolon_separated_read_as_comma", GOOD.replace(",", ";"),
              "data.target: column 'y' not in data.csv, which looks semicolon-separated (got one column, 'a;b;y'); "
              "set data.sep: ';' in the spec", extra="  sep: ','\n"),
    data_case("drop_column_missing", GOOD, "data: column 'zz' (in drop/categorical) not in data.csv; columns are: "
              "a, b, y", extra="  drop: [zz]\n"),
    data_case("no_feature_columns", csv("y", range(40)), "data: data.csv has no feature columns besides the target "
              "'y'"),
    data_case("mixed_types", csv("a,b,y", (f"{i},{'unknown' if i == 7 else i * 2},{i % 2}" for i in range(40))),
              "data: column 'b' mixes numbers and text (got 'unknown' at line 9; text in 1 of 40 values); fix those "
              "values, add them to data.na_values to read them as missing, or list the column in data.categorical"),
    data_case("all_constant_features", csv("a,b,y", (f"1,k,{i % 2}" for i in range(40))),
              "data: every feature column is constant (a, b); there is nothing to learn from: check data.drop and "
              "the file"),
    # --- the target
    data_case("target_all_nan", csv("a,y", (f"{i}," for i in range(40))), "data.target: column 'y' has no values "
              "(all missing); check data.target and data.na_values"),
    data_case("single_class", csv("a,y", (f"{i},yes" for i in range(40))), "data.target: column 'y' has a single "
              "class ('yes'); classification needs at least two"),
    data_case("class_with_one_row", csv("a,y", [*(f"{i},{'x' if i < 20 else 'y'}" for i in range(40)), "99,z"]),
              "data.target: class 'z' has only 1 row; stratified train/validation/test splits need at least 3 rows "
              "of every class: add rows of that class, or remove it or merge it into another class"),
    data_case("regression_target_with_text", csv("a,price", (f"{i},{'unknown' if i == 3 else i * 1.5}"
                                                             for i in range(40))),
              "data.target: column 'price' has text (got 'unknown' at line 5; text in 1 of 40 values), but a "
              "regression target must be numbers; fix those values, add them to data.na_values to read them as "
              "missing, or set data.task: classification", target="price", extra="  task: regression\n"),
    data_case("regression_target_mostly_text_under_auto", csv("a,price", (f"{i},{'unknown' if i == 3 else i * 1.5}"
                                                                          for i in range(40))),
              "data.target: column 'price' mixes numbers and text (got 'unknown' at line 5; text in 1 of 40 values); "
              "fix those values, add them to data.na_values to read them as missing, or set data.task: "
              "classification if the values are labels", target="price"),
    data_case("metric_does_not_fit_inferred_task", GOOD, "study.metric: 'r2' does not fit this classification task "
              "(inferred from the target); use one of accuracy, balanced_accuracy, f1_macro, roc_auc, log_loss, or "
              "set data.task", extra="study:\n  metric: r2\n"),
    # --- sizes
    data_case("smaller_than_splits", csv("a,y", ["1,2.5", "2,3.5", "3,1.0"]), "data: 3 rows are too few for the "
              "splits: data.test_size 0.2 and data.val_size 0.2 give train/validation/test = 1/1/1 rows, and it takes "
              "at least 2 training rows and 1 row in each other split; use more rows, or change data.test_size / "
              "data.val_size"),
    data_case("fewer_rows_than_classes_per_split", csv("a,y", (f"{i},{i % 10}" for i in range(30))),
              "data: 30 rows are too few for the splits: data.test_size 0.2 and data.val_size 0.2 give "
              "train/validation/test = 19/5/6 rows, and it takes at least 10 rows in each split (one per class); "
              "use more rows, or change data.test_size / data.val_size"),
    # --- the same checks through a real search (the data is read by `automlp search`)
    data_case("search_class_with_one_row", csv("a,y", [*(f"{i},{'x' if i < 20 else 'y'}" for i in range(40)),
                                                       "99,z"]),
              "data.target: class 'z' has only 1 row; stratified train/validation/test splits need at least 3 rows "
              "of every class: add rows of that class, or remove it or merge it into another class", args=SEARCH),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_cases(DATA_CASES, tmp_path_factory.mktemp("data_cases"))


@pytest.mark.parametrize("case", DATA_CASES, ids=lambda c: c.id)
def test_bad_data(case: Case, results):
    proc, d = results[case.id]
    assert_error(proc, case.expected.format(dir=d), case.code)
    assert not (d / "studies").exists() or not any((d / "studies").rglob("summary.json"))


def test_ten_thousand_categories_are_capped_by_max_categories(tmp_path):
    """Not an error: one-hot keeps data.max_categories - 1 frequent categories and groups the rest (documented)."""
    (tmp_path / "data.csv").write_text(csv("id,x,y", (f"c{i},{i % 7},{i % 2}" for i in range(10_000))))
    (tmp_path / "spec.yaml").write_text("data:\n  path: data.csv\n  target: y\n  max_categories: 20\n")
    proc = run_automlp(CHECK, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ("note: column 'id' has 10000 categories: one-hot keeps the 19 most frequent and groups the rest into "
            "one (data.max_categories: 20); every row has its own value, which looks like an identifier (consider "
            "data.drop)") in proc.stderr
    # x, then 19 frequent ids and one column for the rest
    assert f"data: {tmp_path}/data.csv: classification, rows train/val/test 6400/1600/2000, 21 features " \
           "after preprocessing" in proc.stdout
