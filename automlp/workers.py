"""Worker processes on one machine and the signals that stop them (launching only: the trials run in
`automlp.search.run_worker`, the status of a shared study is `automlp.report.status`).

`automlp search --workers N` creates the study once (so no two processes race to create tables), then starts N
processes (not threads: Optuna's `n_jobs` threads share one GIL). Each runs `automlp.search.run_worker` on the same
storage until the study-wide budget is spent; the parent shows progress, then scores the best trial and writes
the summary as a single-process search would.

Signals: in the parent, the first Ctrl-C asks every worker to stop (SIGTERM: the running trial ends after its
current epoch and is marked FAIL); a second one kills them, and their trials are failed and queued for retry.
Workers ignore SIGINT themselves, so the terminal's Ctrl-C (sent to the whole process group) reaches them once,
through the parent. A standalone `automlp worker` stops the same way on SIGINT or SIGTERM.

Kept free of torch at import time: a spawned worker sets CUDA_VISIBLE_DEVICES and thread counts first.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import optuna

from automlp.errors import AutomlpError
from automlp.spec import Spec
from automlp.storage import fail_stale_trials

POLL_S = 0.5


# --------------------------------------------------------------------------- signals


@contextlib.contextmanager
def graceful_stop(signals=(signal.SIGINT, signal.SIGTERM)) -> Iterator[threading.Event]:
    """The first signal sets the yielded event (stop after the current epoch); a second SIGINT raises
    KeyboardInterrupt as usual, for the impatient."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    old = {s: signal.signal(s, handler) for s in signals}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def quiet_optuna() -> None:
    """Optuna's logger at WARNING (failed trials still show)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class WorkerPlan:
    index: int
    threads: int
    env: dict[str, str]


def plan_workers(spec: Spec, n_workers: int) -> tuple[list[WorkerPlan], list[str]]:
    """Threads per worker so that workers x threads <= cores; one GPU per worker where there are several."""
    notes = []
    cores = len(os.sched_getaffinity(0))
    threads = spec.training.threads or max(1, cores // n_workers)
    if n_workers * threads > cores:
        notes.append(f"{n_workers} workers x {threads} threads on {cores} cores: the CPU is oversubscribed")
    gpus = _gpu_ids(spec)
    if gpus is not None and len(gpus) < n_workers and len(gpus) > 1:
        notes.append(f"{n_workers} workers share {len(gpus)} GPUs")
    plans = []
    for i in range(n_workers):
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        plans.append(WorkerPlan(i, threads, env))
    return plans, notes


def _gpu_ids(spec: Spec) -> list[str] | None:
    """The CUDA devices to deal out, or None to leave the device alone (one GPU is shared by all workers;
    an explicit cuda:N, cpu or mps applies to every worker)."""
    if spec.training.device not in ("auto", "cuda"):
        return None
    import torch

    n = torch.cuda.device_count()  # asks NVML; does not initialise CUDA in this process
    if n < 2:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(n)]


# --------------------------------------------------------------------------- the processes


def _worker_main(spec: Spec, deadline: float | None, env: dict[str, str]) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent relays Ctrl-C as SIGTERM, exactly once
    os.environ.update(env)  # before anything initialises CUDA (torch reads CUDA_VISIBLE_DEVICES lazily)
    quiet_optuna()
    from automlp.search import run_worker

    try:
        with graceful_stop((signal.SIGTERM,)) as stop:
            ran = run_worker(spec, stop, deadline)
    except AutomlpError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(130 if ran.get("interrupted") else 0)


def run_parallel(spec: Spec, n_workers: int, progress: Callable | None = None,
                 stop: threading.Event | None = None):
    """`automlp search --workers N`: the study, N worker processes, then the best model (a `SearchOutcome`)."""
    from automlp.search import run_search

    stop = stop or threading.Event()
    plans, plan_notes = plan_workers(spec, n_workers)

    def launcher(study: optuna.Study, deadline: float | None, notes: list[str]) -> bool:
        notes.extend(plan_notes)
        return _launch(spec, plans, study, deadline, notes, stop, progress)

    return run_search(spec, stop=stop, launcher=launcher)


def _launch(spec: Spec, plans: list[WorkerPlan], study: optuna.Study, deadline: float | None, notes: list[str],
            stop: threading.Event, progress: Callable | None) -> bool:
    ctx = _context()
    procs = []
    for plan in plans:
        wspec = spec.model_copy(deep=True)
        wspec.training.threads = plan.threads  # torch.set_num_threads in the worker
        p = ctx.Process(target=_worker_main, args=(wspec, deadline, plan.env), name=f"automlp-worker-{plan.index}")
        p.start()
        procs.append(p)
    poll = _Poller(study, spec.study.n_trials, progress)
    relayed = False
    try:
        while any(p.is_alive() for p in procs):
            if stop.is_set() and not relayed:
                relayed = True
                for p in procs:
                    if p.is_alive():
                        os.kill(p.pid, signal.SIGTERM)
            poll()
            stop.wait(POLL_S) if not stop.is_set() else time.sleep(POLL_S / 5)
    except KeyboardInterrupt:  # second Ctrl-C: no more waiting
        for p in procs:
            p.kill()
        notes.append("workers killed by a second Ctrl-C; their trials were marked FAIL and queued for retry")
        stop.set()
    for p in procs:
        p.join()
    poll(final=True)
    fail_stale_trials(study)  # trials of workers that died (killed, crashed) are failed and queued for retry now
    for plan, p in zip(plans, procs):
        if p.exitcode not in (0, 130):
            how = f"signal {-p.exitcode}" if p.exitcode < 0 else f"status {p.exitcode}"
            notes.append(f"worker {plan.index} (pid {p.pid}) ended with {how}")
    return stop.is_set()


def start_worker_server() -> None:
    """Start the fork server now: it imports torch, sklearn and automlp (about 3 s on 2 cores), and started
    before the parent's own imports it does that alongside them instead of after. No-op without a fork server."""
    ctx = _context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _context():
    """Workers are forked from a fork server that imported torch, sklearn and automlp once (no thread pool,
    CUDA context or socket exists there yet), so N workers do not each pay the imports (several seconds on
    2 cores). Where there is no fork server (Windows), a fresh interpreter per worker."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["automlp.search", "torch._dynamo"])  # torch.optim imports _dynamo lazily
    return ctx


class _Poller:
    """Progress of the whole study, read from the storage every call (the workers write it)."""

    def __init__(self, study: optuna.Study, n_total: int | None, progress: Callable | None):
        self.study, self.n_total, self.progress = study, n_total, progress
        self.start = time.perf_counter()
        from automlp.search.study import n_finished

        self.n_before = n_finished(study)

    def __call__(self, final: bool = False) -> None:
        if self.progress is None:
            return
        from automlp.search.run import Progress, best_value
        from automlp.search.study import n_finished

        n_done = n_finished(self.study)
        best = best_value(self.study)
        elapsed = time.perf_counter() - self.start
        ran = n_done - self.n_before
        eta = max(self.n_total - n_done, 0) * elapsed / ran if self.n_total and ran > 0 else None
        self.progress(Progress(n_done, self.n_total, best, elapsed, eta, "FINISHED" if final else "RUNNING"))
