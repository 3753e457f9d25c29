"""Shared helpers of the bad-input catalogue: run the installed `automlp` console script as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

AUTOMLP = str(Path(sys.executable).with_name("automlp"))


def run_automlp(args: list[str], cwd: Path, timeout: float = 120, env: dict | None = None
                ) -> subprocess.CompletedProcess:
    """`automlp *args` in `cwd`; a hang fails the test instead of hanging CI."""
    full_env = {**os.environ, "PYTHONHASHSEED": "0", "COLUMNS": "200", **(env or {})}
    return subprocess.run([AUTOMLP, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


@dataclass
class Case:
    """One bad input: the files to write (name -> text or bytes), the command, and the exact error message.

    `expected` may hold {dir} (the case's folder) and {torch} (the installed torch version)."""

    id: str
    files: dict[str, str | bytes]
    expected: str
    args: list[str] = field(default_factory=lambda: ["validate", "spec.yaml"])
    code: int = 2


def run_cases(cases: list[Case], root: Path, workers: int = 3) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Write every case into its own folder under `root` and run them concurrently (each is mostly imports)."""
    def one(case: Case) -> tuple[str, tuple[subprocess.CompletedProcess, Path]]:
        d = root / case.id
        d.mkdir(parents=True)
        for name, content in case.files.items():
            p = d / name
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            elif content == "<dir>":
                p.mkdir()
            else:
                p.write_text(content, encoding="utf-8")
        return case.id, (run_automlp(case.args, d), d)

    with ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(one, cases))


def assert_error(proc: subprocess.CompletedProcess, expected: str, code: int = 2) -> None:
    """Exit status `code`, stderr exactly `error: <expected>`, and never a traceback."""
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    got = proc.stderr.strip()
    assert got == f"error: {expected}", f"\n got: {got}\nwant: error: {expected}"
    assert proc.returncode == code, (proc.returncode, proc.stderr)
