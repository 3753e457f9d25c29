"""Helpers of the fault tests: a PostgreSQL server of the test's own (so the machine's stays up for the other
tests), and network namespaces that stand for other hosts. Tools missing: skip, or fail under CI
(AUTOMLP_REQUIRE_DB=1), where .ci/run installs them."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def require(ok: bool, what: str) -> None:
    if ok:
        return
    if os.environ.get("AUTOMLP_REQUIRE_DB") == "1":
        pytest.fail(f"{what}; .ci/run installs it")
    pytest.skip(what)


def pg_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return next((f"{d}/{name}" for d in reversed(dirs) if os.access(f"{d}/{name}", os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnPostgres:
    """A throwaway PostgreSQL cluster in a temp folder (fsync off, trust auth), started with pg_ctl; as root it
    runs as the `postgres` user, since PostgreSQL refuses root. `prefix` runs its commands elsewhere (a netns)."""

    def __init__(self, listen: str = "127.0.0.1", port: int | None = None, prefix: tuple[str, ...] = (),
                 trust: str | None = None):
        initdb, pg_ctl = pg_tool("initdb"), pg_tool("pg_ctl")
        require(bool(initdb and pg_ctl), "PostgreSQL's initdb and pg_ctl are not installed")
        self.initdb, self.pg_ctl, self.listen, self.prefix = initdb, pg_ctl, listen, prefix
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="automlp-pg-"))
        self.as_user: tuple[str, ...] = ()
        if os.geteuid() == 0:
            require(_has_user("postgres"), "no 'postgres' user to run a PostgreSQL server as (root may not)")
            os.chown(self.dir, pwd.getpwnam("postgres").pw_uid, -1)
            self.as_user = ("runuser", "-u", "postgres", "--")
        self._run(self.initdb, "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "-N")
        if trust:  # clients of this network (the test's own namespaces) may connect too
            with open(self.dir / "data" / "pg_hba.conf", "a") as f:
                f.write(f"host all all {trust} trust\n")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.listen.split(',')[0]}:{self.port}/postgres"

    @property
    def socket_url(self) -> str:
        """Over its Unix socket: reachable from any network namespace."""
        return f"postgresql://postgres@/postgres?host={self.dir}&port={self.port}"

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.prefix, *self.as_user, *cmd], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses={self.listen} -c fsync=off"
        self._run(self.pg_ctl, "-D", str(self.dir / "data"), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self) -> None:
        """A fast shutdown, as a restart for maintenance does: clients get 'terminating connection due to
        administrator command', then 'connection refused'."""
        self._run(self.pg_ctl, "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        subprocess.run([*self.prefix, *self.as_user, self.pg_ctl, "-D", str(self.dir / "data"), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def wait_until(pred, timeout: float, what: str, poll: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            v = pred()
        except Exception:  # the storage may be down or the study not there yet: look again
            v = None
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
