"""Crash reports: the traceback of an unexpected error goes to a file, the console gets one line naming it.

Used by the CLI and by worker processes (a worker never prints a traceback: the parent names its report)."""

from __future__ import annotations

import os
import tempfile
import traceback


def save_crash_report(e: BaseException) -> str:
    """Write the traceback of `e` to a new file in the temp folder; returns its path."""
    fd, path = tempfile.mkstemp(prefix="automlp-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write("".join(traceback.format_exception(e)))
    return path


def crash_line(e: BaseException) -> str:
    """`TypeName: first line of the message`."""
    first = str(e).splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
