"""Workers through Optuna's gRPC storage proxy, for real: `automlp search --workers 2 --storage grpc://...` against
`optuna.storages.run_grpc_proxy_server` in front of a database; the proxy is killed and restarted mid-study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fault_util import free_port, require, wait_until
from parallel_util import describe, finish, start, states, trials_of, write_spec

pytestmark = pytest.mark.slow


def _proxy(db, port):
    code = textwrap.dedent(f"""
        from optuna.storages import get_storage, run_grpc_proxy_server
        run_grpc_proxy_server(get_storage("sqlite:///{db}"), host="127.0.0.1", port={port})
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_two_workers_through_the_grpc_proxy_ride_out_its_restart(tmp_path):
    try:
        import grpc  # noqa: F401 - the proxy's client and server need it (pip install 'automlp[grpc]')
    except ImportError:
        require(False, "grpcio is not installed")
    port = free_port()
    url = f"grpc://127.0.0.1:{port}"
    server = _proxy(tmp_path / "proxied.db", port)
    spec = write_spec(tmp_path, "grpc", n_trials=8, epochs=100, batch_size=8, storage=url, heartbeat_interval=1,
                      grace_period=30, storage_patience=60)
    try:
        proc = start("search", str(spec), "--workers", "2", "--no-report", "--no-export", cwd=tmp_path)

        def running_and_finished():
            n = states(trials_of("grpc", url))
            return n.get("RUNNING") and n.get("COMPLETE")

        wait_until(running_and_finished, 180, "a finished trial and a running one")
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        time.sleep(3)
        server = _proxy(tmp_path / "proxied.db", port)
        [(rc, out, err)] = finish([proc])
        trials = trials_of("grpc", url)
    finally:
        server.kill()
    assert rc == 0, err
    assert "Traceback" not in err and "error" not in err, err
    assert "the storage was unreachable during the search and the workers rode it out" in err
    assert states(trials) == {"COMPLETE": 8}, describe(trials)
    assert sorted(t.number for t in trials) == list(range(8))
    assert len({t.system_attrs["automlp:worker"]["pid"] for t in trials}) == 2  # both workers trained
