"""Liveness of the processes that run a study's trials: who runs a trial (host, boot, pid), whether that
process is dead on this machine, and heartbeats written as a trial system attr, which work through any storage
(the journal file and the gRPC proxy have none of their own in Optuna 5; the RDB storages use Optuna's)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from automlp.adapters import BaseHeartbeat, trial_id

WORKER_ATTR = "automlp:worker"  # trial system attr: which process runs the trial, and its last heartbeat


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[19])


HOST, BOOT = socket.gethostname(), _boot_id()


def worker_record() -> dict:
    """Who this process is, in a form another process on the same machine can check for liveness."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return {"host": HOST, "boot": BOOT, "pid": pid, "pid_start": stat[1] if stat else None}


def is_dead_here(rec: dict) -> bool:
    """True when `rec` names a process of this machine that no longer runs (exited, killed, a zombie, or its
    pid reused by another process). Processes of other machines are judged by their heartbeat instead."""
    if rec.get("host") != HOST or rec.get("boot") != BOOT:
        return False
    pid = int(rec.get("pid", -1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by another user
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, start = stat
    return state in "ZX" or (rec.get("pid_start") is not None and start != rec["pid_start"])


def _stale_ids(storage: optuna.storages.BaseStorage, study_id: int, grace_period: float | None,
               unstarted_grace: float | None = None) -> list[int]:
    """Running trials whose process died on this machine, or (grace_period set) whose last heartbeat is older, or
    (unstarted_grace set) that never recorded a worker and started longer ago than that: the storage went away
    between the trial's creation and its first heartbeat, and nothing else would ever fail it (Optuna's RDB
    storage skips a trial without a heartbeat row), so a rerun would wait for its slot for ever."""
    now, out = time.time(), []
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        rec = t.system_attrs.get(WORKER_ATTR)
        if not rec or rec.get("trial_id") != trial_id(t):  # no heartbeat yet (or one copied from the retried trial)
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if unstarted_grace is not None and now - started > unstarted_grace:
                out.append(trial_id(t))
            continue
        if is_dead_here(rec) or (grace_period is not None and now - rec.get("t", now) > grace_period):
            out.append(trial_id(t))
    return out


class SystemAttrHeartbeat(BaseHeartbeat):
    """Heartbeats through Optuna's `BaseHeartbeat` interface for a storage that has none: each running trial's
    worker writes its identity and the time into a system attr every `heartbeat_interval` seconds; Optuna's
    optimize loop (and our runners) then fail the stale ones (and the retry callback re-enqueues them), exactly
    as for the RDB storages. A storage class mixes this in and calls `_init_heartbeat`."""

    def _init_heartbeat(self, heartbeat_interval: int, grace_period: int,
                        heartbeat_stale_trial_callback: Callable | None = None) -> None:
        self._interval, self._grace, self._on_stale = heartbeat_interval, grace_period, heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, WORKER_ATTR, worker_record() | {"trial_id": trial_id, "t": time.time()})

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return _stale_ids(self, study_id, self._grace, self._grace)

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self):
        return self._on_stale
