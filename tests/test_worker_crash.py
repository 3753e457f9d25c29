"""A worker process that crashes prints no traceback: it is saved in a crash report, which the parent names."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from parallel_util import finish, start, write_spec

pytestmark = pytest.mark.slow


def test_a_crashing_worker_leaves_a_crash_report_that_the_parent_names(tmp_path, monkeypatch):
    hook = tmp_path / "hook"
    hook.mkdir()
    # every process of the command runs this at start (the fork server too): the workers' entry point fails
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""
        import importlib

        def run_worker(*args, **kwargs):
            raise RuntimeError("boom in the worker")

        # the module, not automlp.search (the function of the Python API)
        importlib.import_module("automlp.search").run_worker = run_worker
    """))
    monkeypatch.setenv("PYTHONPATH", f"{hook}:{__import__('os').environ.get('PYTHONPATH', '')}")
    spec = write_spec(tmp_path, "crash", n_trials=2)
    [(rc, out, err)] = finish([start("search", str(spec), "--workers", "2", "-q", "--no-report", cwd=tmp_path)])
    assert "Traceback" not in err, err
    reports = re.findall(r"note: worker (\d) \(pid \d+\) crashed \(RuntimeError: boom in the worker\); this is a bug "
                         r"in automlp, please report it with the traceback saved in (\S+)\n", err)
    assert sorted(i for i, _ in reports) == ["0", "1"], err
    for _, path in reports:
        text = Path(path).read_text()
        assert text.startswith("Traceback (most recent call last):") and "RuntimeError: boom in the worker" in text
        Path(path).unlink()
