"""One voice in messages and flags: the "where" of an error is the YAML path when the value came from the spec
and the flag when it came from the command line; rows are `line N` of a text file; "got" is `(got X)`; one
name per flag (the old ones still work, hidden); workers raise to the CLI; a semicolon CSV is read or named."""

from __future__ import annotations

import queue
import signal

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from automlp.cli import app
from automlp.data import prepare_data, read_data, row_label
from automlp.errors import DataError
from automlp.spec import DataSpec, validate_spec_dict

IRIS = "data:\n  dataset: sklearn:iris\nspace:\n  depth: 1\n  width: 8\n  max_epochs: 2\n"
REDIS = ("unknown storage scheme 'redis'; use sqlite:///file.db, postgresql://..., mysql+pymysql://..., "
         "journal:///path/file.journal or grpc://host:port")


def invoke(*args, cwd=None):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_lines(result) -> list[str]:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    return result.stderr.splitlines()


# --------------------------------------------------------------------------- where: the flag or the YAML path


def test_a_bad_storage_given_with_device_is_a_storage_error(tmp_path):
    (tmp_path / "s.yaml").write_text(IRIS)
    r = invoke("search", tmp_path / "s.yaml", "--storage", "redis://localhost", "--device", "cpu")
    assert error_lines(r) == [f"error: --storage: {REDIS}"]
    r = invoke("search", tmp_path / "s.yaml", "--storage", "redis://localhost", "--device", "gpu")
    assert error_lines(r) == [f"error: --storage: {REDIS}",
                              "error: --device: unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps"]


def test_storage_errors_name_the_spec_key_or_the_flag(tmp_path):
    blocked = tmp_path / "a_file"
    blocked.write_text("")  # a journal "inside" a file cannot be created
    url = f"journal://{blocked}/x.journal"
    (tmp_path / "s.yaml").write_text(IRIS + f"study:\n  storage: {url}\n")
    want = f"cannot open the journal file {blocked}/x.journal: File exists"
    assert error_lines(invoke("status", tmp_path / "s.yaml")) == [f"error: study.storage: {want}"]
    (tmp_path / "t.yaml").write_text(IRIS)
    assert error_lines(invoke("status", tmp_path / "t.yaml", "--storage", url)) == [f"error: --storage: {want}"]


def test_status_and_report_name_the_flags_they_need(tmp_path):
    assert error_lines(invoke("status")) == [
        "error: --study-name and --storage: needed when no spec file is given; give a spec file, or both "
        "--study-name NAME and --storage URL"]
    assert error_lines(invoke("status", "--study-name", "x")) == [
        "error: --storage: needed when no spec file is given; give a spec file, or both --study-name NAME and "
        "--storage URL"]
    url = f"journal:///{tmp_path}/none.journal"
    assert error_lines(invoke("report", "--storage", url)) == [
        f"error: --storage: {url} holds no study; run automlp search first, or check --storage"]


# --------------------------------------------------------------------------- one name per flag


def test_old_flag_names_still_work_but_are_not_shown(tmp_path):
    url = f"journal:///{tmp_path}/none.journal"
    new = invoke("status", "--study-name", "nope", "--storage", url)
    old = invoke("status", "--study", "nope", "--storage", url)
    assert error_lines(new) == error_lines(old) == [f"error: --study-name: no study 'nope' in {url}; studies "
                                                    "there: none. Run automlp search first, or check --study-name "
                                                    "and --storage"]
    status_help = invoke("status", "--help").output
    report_help = invoke("report", "--help").output
    assert "--study-name" in status_help and "--study " not in status_help
    assert "--output" in report_help and "--out " not in report_help


# --------------------------------------------------------------------------- workers raise, the CLI prints


def test_a_worker_sends_its_error_to_the_parent_instead_of_printing_it(tmp_path, capsys):
    from automlp.workers import _worker_main

    spec = validate_spec_dict({"data": {"path": str(tmp_path / "gone.csv"), "target": "y"}})
    reports = queue.SimpleQueue()
    old = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as e:
            _worker_main(spec, None, {}, 0, reports)
    finally:
        signal.signal(signal.SIGINT, old)
    assert e.value.code == 2
    index, kind, sent = reports.get_nowait()
    assert (index, kind) == (0, "error")
    assert isinstance(sent, DataError)
    assert str(sent) == (f"data.path: file not found: {tmp_path}/gone.csv (a relative data.path starts at the "
                         "spec's folder)")
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_the_parent_raises_the_error_of_its_workers_once(tmp_path):
    import threading

    import optuna

    from automlp.workers import _launch, plan_workers

    spec = validate_spec_dict({"data": {"path": str(tmp_path / "gone.csv"), "target": "y"},
                               "training": {"threads": 1}})
    plans, _ = plan_workers(spec, 2)
    with pytest.raises(DataError) as e:  # both workers fail alike; the CLI prints it as one `error:` line
        _launch(spec, plans, optuna.create_study(), None, [], threading.Event(), None)
    assert str(e.value).startswith("data.path: file not found: ")


# --------------------------------------------------------------------------- rows, got


def test_rows_are_lines_of_a_text_file_and_rows_elsewhere(tmp_path):
    assert [row_label(0, "d.csv"), row_label(9, "d.tsv.gz"), row_label(0, "d.parquet"), row_label(4, "X")] == \
        ["line 2", "line 11", "row 1", "row 5"]
    frame = pd.DataFrame({"a": [str(i) for i in range(40)], "y": [i % 2 for i in range(40)]})
    frame.loc[7, "a"] = "unknown"
    frame.to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError) as e:
        read_data(DataSpec(path=tmp_path / "d.parquet", target="y"))
    assert str(e.value) == ("data: column 'a' mixes numbers and text (got 'unknown' at row 8; text in 1 of 40 "
                            "values); fix those values, add them to data.na_values to read them as missing, or list "
                            "the column in data.categorical")


# --------------------------------------------------------------------------- the separator


def _rows(sep: str) -> str:
    return f"a{sep}b{sep}y\n" + "".join(f"{i}{sep}{i % 5}{sep}{i % 2}\n" for i in range(40))


@pytest.mark.parametrize("sep", [";", "\t", "|", ","])
def test_the_separator_is_sniffed(tmp_path, sep):
    (tmp_path / "d.csv").write_text(_rows(sep))
    data = prepare_data(DataSpec(path=tmp_path / "d.csv", target="y"), seed=0)
    assert data.input_columns == ["a", "b"] and sum(data.sizes().values()) == 40
    assert np.isfinite(data.X_train).all()


def test_a_separator_that_does_not_fit_the_file_says_what_the_file_looks_like(tmp_path):
    (tmp_path / "d.csv").write_text(_rows(";"))
    with pytest.raises(DataError) as e:
        read_data(DataSpec(path=tmp_path / "d.csv", target="y", sep=","))
    assert str(e.value) == ("data.target: column 'y' not in d.csv, which looks semicolon-separated (got one column, "
                            "'a;b;y'); set data.sep: ';' in the spec")
    spec = read_data(DataSpec(path=tmp_path / "d.csv", target="y", sep=";"))
    assert list(spec.X.columns) == ["a", "b"]


def test_data_sep_must_be_one_separator_character(tmp_path):
    from automlp.errors import SpecError

    with pytest.raises(SpecError) as e:
        validate_spec_dict({"data": {"path": "d.csv", "target": "y", "sep": ";;"}}, "s.yaml")
    assert str(e.value) == ("s.yaml data.sep: must be one character that separates columns, such as ',', ';', '\\t' "
                            "or '|' (got ';;')")


# --------------------------------------------------------------------------- export: the folder or the spec key


def test_export_names_the_folder_or_the_spec_key(tmp_path):
    folder = tmp_path / "studies" / "s"
    folder.mkdir(parents=True)
    assert error_lines(invoke("export", folder)) == [
        f"error: {folder}: has no model/metadata.json to take the spec from; give the spec file (YAML) of the "
        "study instead"]
    (tmp_path / "s.yaml").write_text(IRIS + f"output:\n  dir: {tmp_path / 'studies'}\n")
    journal = folder / "study.journal"
    assert error_lines(invoke("export", tmp_path / "s.yaml")) == [
        f"error: output.dir: no study 's' in journal://{journal} (no such file); run automlp search with this "
        "spec first"]
