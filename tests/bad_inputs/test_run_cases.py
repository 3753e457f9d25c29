"""Failures while a search runs: a full disk, an unreachable database, a study whose space changed, a GPU that
is not there, Ctrl-C. Each is a clear message and exit status, and nothing already computed is lost."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from catalogue import AUTOMLP, assert_error, run_automlp

SPEC = ("data:\n  dataset: sklearn:iris\nspace:\n  depth: 1\n  width: {width}\n  max_epochs: 3\n"
        "study:\n  sampler: random\n  pruner: none\n")
SEARCH = ["search", "--n-trials", "1", "--quiet", "spec.yaml"]


def write_spec(d: Path, width: str = "8", extra: str = "") -> None:
    (d / "spec.yaml").write_text(SPEC.format(width=width) + extra)


def trial_states(journal: Path) -> dict[str, int]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="spec", storage=storage)
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return states


@contextlib.contextmanager
def full_folder(path: Path):
    """`path` as a folder with no space left: a tiny tmpfs filled up (needs root), else the summary file made
    a link to /dev/full, whose writes fail with ENOSPC like a full disk's."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        if mounted:
            fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT)
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
            os.close(fd)
        else:
            (path / "spec").mkdir()
            (path / "spec" / "summary.json.tmp").symlink_to("/dev/full")
        yield
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)


@pytest.mark.slow
def test_no_space_left_for_the_outputs_loses_no_trial_then_a_changed_space_is_refused(tmp_path):
    # the study lives outside the full folder; the outputs cannot be written
    journal = tmp_path / "kept.journal"
    write_spec(tmp_path, extra="output:\n  dir: out\n")
    with full_folder(tmp_path / "out"):
        proc = run_automlp([*SEARCH, "--storage", f"journal://{journal}"], tmp_path)
        assert_error(proc, "output.dir: cannot write in out/spec: No space left on device; free some space and run "
                           "the same command again: finished trials are kept in the study's storage and are not "
                           "run again")
    assert trial_states(journal) == {"COMPLETE": 1}
    # space is back: the same command writes the outputs without running the trial again
    proc = run_automlp([*SEARCH, "--storage", f"journal://{journal}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to run" in proc.stderr
    summary = json.loads((tmp_path / "out" / "spec" / "summary.json").read_text())
    assert summary["trials"] == {"COMPLETE": 1}
    # the same study name with another space is refused, naming the parameter; the study is untouched
    write_spec(tmp_path, width="[8, 32]", extra="output:\n  dir: out\n")
    proc = run_automlp([*SEARCH, "--storage", f"journal://{journal}"], tmp_path)
    assert_error(proc, f"study.name: study 'spec' in journal://{journal} was run with another search space "
                       "(space.width; width: 8 -> one of 8, 32); its trials would not be comparable. Use a new "
                       "study.name, or put the old values back")
    assert trial_states(journal) == {"COMPLETE": 1}


def test_unreachable_postgres_is_a_clear_error_without_a_hang_or_the_password(tmp_path):
    write_spec(tmp_path)
    start = time.monotonic()
    proc = run_automlp([*SEARCH, "--storage", "postgresql://automlp:s3cr3t-pw@127.0.0.1:1/test"], tmp_path,
                       timeout=60)
    assert time.monotonic() - start < 45  # connect_timeout bounds it; port 1 refuses at once
    assert "s3cr3t-pw" not in proc.stderr + proc.stdout
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --storage: cannot open postgresql://automlp:***@127.0.0.1:1/test: "), \
        proc.stderr
    assert "Connection refused" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cuda_requested_where_there_is_none(tmp_path):
    if subprocess.run(["nvidia-smi"], capture_output=True, shell=False).returncode == 0 if \
            Path("/usr/bin/nvidia-smi").exists() else False:
        pytest.skip("CPU-only: checks the message on a machine without a CUDA GPU, and this one has one")
    write_spec(tmp_path, extra="training:\n  device: cuda\n")
    proc = run_automlp(SEARCH, tmp_path)
    torch_version = importlib.metadata.version("torch")
    assert_error(proc, f"training.device: cuda was asked for, but torch sees no CUDA GPU here (torch "
                       f"{torch_version}); use device: auto or cpu")
    assert not (tmp_path / "studies").exists()


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_leaves_nothing_running(tmp_path):
    (tmp_path / "spec.yaml").write_text(
        "data:\n  dataset: sklearn:iris\nspace:\n  depth: 1\n  width: 16\n  max_epochs: 50\n"
        "study:\n  sampler: random\n  pruner: none\n  n_trials: 5000\n")
    journal = tmp_path / "studies" / "spec" / "study.journal"
    proc = subprocess.Popen([AUTOMLP, "search", "--quiet", "spec.yaml"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not journal.exists() or journal.read_text().count('"state":1') < 1):
        time.sleep(0.1)  # until a trial has finished
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert proc.returncode == 130, err
    assert "note: interrupted: the running trials were marked FAIL; run the same command to resume" in err, err
    states = trial_states(journal)
    assert "RUNNING" not in states and states.get("COMPLETE", 0) >= 1, states
    assert json.loads((tmp_path / "studies" / "spec" / "summary.json").read_text())["best"] is not None


@pytest.mark.slow
def test_html_in_column_names_and_values_flows_through_search(tmp_path):
    """The data side of the report's escaping test: a column named `<script>alert(1)</script>` and a category
    `<img src=x onerror=alert(1)>` go through reading, preprocessing, search and summary without breaking.
    When the HTML report exists (branch `report`), no raw markup from the data may appear in it."""
    rows = "".join(f"{i % 9},{'<img src=x onerror=alert(1)>' if i % 3 else 'plain'},{i % 2}\n" for i in range(60))
    (tmp_path / "data.csv").write_text("<script>alert(1)</script>,kind,y\n" + rows)
    (tmp_path / "spec.yaml").write_text("data:\n  path: data.csv\n  target: y\nspace:\n  depth: 1\n  width: 8\n"
                                        "  max_epochs: 3\nstudy:\n  sampler: random\n  pruner: none\n")
    proc = run_automlp(SEARCH, tmp_path)
    assert proc.returncode == 0, proc.stderr
    study = tmp_path / "studies" / "spec"
    assert json.loads((study / "summary.json").read_text())["n_features"] == 3  # 1 number + 2 categories
    for page in study.rglob("*.html"):
        html = page.read_text()
        assert "<script>alert(1)</script>" not in html and "<img src=x onerror=alert(1)>" not in html, page


def test_npz_holding_no_arrays(tmp_path):
    import zipfile

    (tmp_path / "spec.yaml").write_text("data:\n  path: d.npz\n")
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as z:
        z.writestr("X.npy", b"not an npy header")
        z.writestr("y.npy", b"nope")
    proc = run_automlp(["validate", "--check-data", "spec.yaml"], tmp_path)
    assert_error(proc, "data.path: 'X' in d.npz is not a NumPy array; save the arrays with numpy.savez")
