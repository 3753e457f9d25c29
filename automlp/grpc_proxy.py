"""`grpc://host:port`: workers that reach the study through Optuna's gRPC storage proxy.

Past a few dozen workers the database connections become the limit; one `optuna.storages.run_grpc_proxy_server`
in front of the database serves them all. Optuna 5's client, `GrpcStorageProxy`, has no heartbeats, so a trial
whose worker died would stay RUNNING: automlp gives it the same heartbeats as the journal file (the worker and the
time in a trial system attr, written through the proxy), and the retry layer rides out a proxy that restarts
(gRPC status UNAVAILABLE).
"""

from __future__ import annotations

import warnings
from typing import Callable

from optuna.exceptions import ExperimentalWarning
from optuna.storages import GrpcStorageProxy

from automlp.errors import StorageError
from automlp.liveness import SystemAttrHeartbeat


class HeartbeatGrpcStorage(GrpcStorageProxy, SystemAttrHeartbeat):
    """Optuna's gRPC storage proxy client with automlp's system-attr heartbeats."""

    def __init__(self, host: str, port: int, *, heartbeat_interval: int, grace_period: int,
                 heartbeat_stale_trial_callback: Callable | None = None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # the user chose the proxy by its URL
            super().__init__(host=host, port=port)
        self._init_heartbeat(heartbeat_interval, grace_period, heartbeat_stale_trial_callback)


def open_grpc_storage(url: str, where: str = "study.storage", **beat) -> HeartbeatGrpcStorage:
    hostport = url.removeprefix("grpc://").rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise StorageError(f"{where}: {url} must be grpc://HOST:PORT (the address of "
                           "optuna.storages.run_grpc_proxy_server)")
    storage = HeartbeatGrpcStorage(host, int(port), **beat)
    try:
        storage.wait_server_ready(timeout=10)
    except ConnectionError:
        raise StorageError(f"{where}: no gRPC storage proxy answers at {hostport} (waited 10 s); start "
                           "optuna.storages.run_grpc_proxy_server there, or check the address") from None
    return storage
