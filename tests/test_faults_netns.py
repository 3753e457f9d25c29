"""Workers on other hosts that vanish: hosts built from network namespaces.

Three namespaces of the test's own: `db` runs a PostgreSQL server of the test's own, `h1` and `h2` each run an
`automlp worker` and reach the server over a veth pair (10.140.1.0/24 and 10.140.2.0/24, addresses that exist only
inside these namespaces). The test reads the study over the server's Unix socket. Cutting h1's link in the middle
of a trial is a host that lost the network: h2 must fail h1's trial once its heartbeat is older than
grace_period, retry it, and finish exactly n_trials; when the link comes back, h1 must find its trial FAIL and
leave it so (no resurrected or duplicated trial), then exit cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
from optuna.trial import TrialState

from automlp.storage import WORKER_ATTR
from fault_util import OwnPostgres, require, wait_until
from parallel_util import AUTOMLP, describe, finish, states, trials_of, write_spec

pytestmark = pytest.mark.slow

GRACE_S = 5


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Hosts:
    """A `db` namespace linked to `h1` and `h2` by one veth pair each."""

    def __init__(self):
        require(shutil.which("ip") is not None, "the 'ip' command (iproute2) is not installed")
        require(os.geteuid() == 0, "network namespaces need root")
        tag = f"am{os.getpid() % 100000}"
        self.db, self.hosts = f"{tag}db", {1: f"{tag}h1", 2: f"{tag}h2"}
        self.links = {i: (f"{tag}d{i}", f"{tag}h{i}") for i in self.hosts}  # (db side, host side)
        self.made: list[str] = []
        try:
            for ns in (self.db, *self.hosts.values()):
                _ip("netns", "add", ns)
                self.made.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as e:
            self.close()
            require(False, f"cannot create network namespaces here: {e.stderr.decode().strip()}")
        for i, ns in self.hosts.items():
            d, h = self.links[i]
            _ip("link", "add", d, "netns", self.db, "type", "veth", "peer", "name", h, "netns", ns)
            _ip("-n", self.db, "addr", "add", f"10.140.{i}.1/24", "dev", d)
            _ip("-n", ns, "addr", "add", f"10.140.{i}.2/24", "dev", h)
            _ip("-n", self.db, "link", "set", d, "up")
            _ip("-n", ns, "link", "set", h, "up")

    def cut(self, i: int, up: bool = False) -> None:
        _ip("-n", self.hosts[i], "link", "set", self.links[i][1], "up" if up else "down")

    def close(self) -> None:
        for ns in self.made:  # deleting a namespace deletes its end of each veth pair, and so the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@pytest.fixture
def net():
    hosts = Hosts()
    server = None
    try:
        server = OwnPostgres(listen="10.140.1.1,10.140.2.1", prefix=("ip", "netns", "exec", hosts.db),
                              trust="10.140.0.0/16")
        server.start()
        yield hosts, server
    finally:
        if server is not None:
            server.close()
        hosts.close()


def _running_by(url, name, pid):
    for t in trials_of(name, url):
        rec = t.system_attrs.get(WORKER_ATTR) or {}
        if t.state == TrialState.RUNNING and rec.get("pid") == pid and rec.get("trial_id") == t._trial_id:
            return t.number
    return None


def _why_not(url, workers) -> str:
    """What the workers and the study were doing when host 1 never ran a trial: their stacks (SIGABRT with
    PYTHONFAULTHANDLER=1), their output, the trials, and the processes of the machine."""
    try:
        trials = describe(trials_of("netns", url))
    except Exception as e:  # the study may not exist: say so
        trials = f"(no trials: {type(e).__name__}: {e})"
    out = []
    for i, p in workers.items():
        alive = p.poll() is None
        if alive:
            p.send_signal(signal.SIGABRT)
        try:
            o, e = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            o, e = p.communicate()
        out.append(f"--- host {i} (pid {p.pid}, {'was running' if alive else f'had exited with {p.returncode}'})"
                   f"\nstdout:\n{o[-3000:]}\nstderr:\n{e[-8000:]}")
    ps = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,etimes,args", "--sort=-pcpu"], capture_output=True,
                        text=True).stdout
    return "host 1 never ran a trial\n--- trials\n" + trials + "\n" + "\n".join(out) + "\n--- ps\n" + ps[:6000]


def test_a_host_that_loses_the_network_mid_trial_is_retried_elsewhere_and_its_late_writes_change_nothing(
        tmp_path, net):
    hosts, pg = net
    url = pg.socket_url
    # trials of a few seconds: the cut must find host 1's trial still running (at 40 epochs a trial took 0.3 s)
    spec = write_spec(tmp_path, "netns", n_trials=6, epochs=300, batch_size=8, heartbeat_interval=1,
                      grace_period=GRACE_S, storage_patience=300)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}

    def worker(i: int) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", hosts.hosts[i], AUTOMLP, "worker", str(spec), "--storage",
                                 f"postgresql://postgres@10.140.{i}.1:{pg.port}/postgres"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # host 1 starts alone and host 2 once host 1's link is cut: started together, host 2 could run all 6 trials
    # before host 1 had started one (it happened in a CI run, under load), and the test waited for nothing
    workers = {1: worker(1)}
    try:
        try:
            lost = wait_until(lambda: _running_by(url, "netns", workers[1].pid), 180, "host 1 to run a trial")
        except AssertionError:
            raise AssertionError(_why_not(url, workers)) from None
        hosts.cut(1)
        cut_at = time.time()
        workers[2] = worker(2)
        wait_until(lambda: states(trials_of("netns", url)).get("COMPLETE", 0) >= 6, 240, "host 2 to finish")
        trials = trials_of("netns", url)
        by_number = {t.number: t for t in trials}
        assert by_number[lost].state == TrialState.FAIL, describe(trials)
        [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == lost]
        assert retry.state == TrialState.COMPLETE and by_number[lost].params.items() <= retry.params.items()
        assert retry.datetime_start.timestamp() >= cut_at + GRACE_S - 1.5, describe(trials)  # after grace_period
        assert retry.system_attrs[WORKER_ATTR]["pid"] == workers[2].pid
        [(rc2, out2, err2)] = finish([workers[2]], timeout=120)
        assert rc2 == 0, err2
        before = {t.number: (t.state, t.values, dict(t.intermediate_values)) for t in trials}

        hosts.cut(1, up=True)  # the host is back: it finishes its trial, then tries to write it
        [(rc1, out1, err1)] = finish([workers[1]], timeout=240)
    finally:
        for p in workers.values():
            if p.poll() is None:
                p.kill()
    assert rc1 == 0, err1
    assert "Traceback" not in err1 and "error" not in err1.lower(), err1
    # (whether it also says "rode out storage outages" depends on whether a call outlasted the TCP timeout while
    # the link was down: under load, host 2 may finish before that)
    trials = trials_of("netns", url)
    after = {t.number: (t.state, t.values, dict(t.intermediate_values)) for t in trials}
    # nothing resurrected or duplicated, and no finished trial written to. One exception, Optuna's RDB storage's: an
    # epoch value whose INSERT reached the server before the cut and whose COMMIT arrives after the heal lands on the
    # lost trial (the storage checks the trial's state at the INSERT, without locking its row), so the lost trial
    # may gain values of the epochs before the cut; it stays FAIL, and its retry is untouched
    for number in before:
        state, values, steps = after[number]
        assert (state, values) == before[number][:2], describe(trials)
        assert steps == before[number][2] or (number == lost and steps.items() >= before[number][2].items()), \
            describe(trials)
    assert after.keys() == before.keys(), describe(trials)
    assert states(trials) == {"COMPLETE": 6, "FAIL": 1}, describe(trials)
