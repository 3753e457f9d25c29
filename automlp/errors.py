"""The exceptions automlp raises on purpose. Everything the user can fix is an AutomlpError."""


class AutomlpError(Exception):
    """Root of automlp's errors: the CLI prints its message on one line and exits with status 2."""


class SpecError(AutomlpError):
    """The spec file is missing, unreadable or invalid. `errors` holds every problem found, one line each
    (the message may list only the first ones and count the rest)."""

    def __init__(self, message: str, errors: list[str] | None = None):
        super().__init__(message)
        self.errors = list(errors) if errors is not None else [message]


class DataError(AutomlpError):
    """The data named by the spec cannot be read or used as asked."""


class StorageError(AutomlpError):
    """The study storage cannot be opened, or holds a study that does not fit the spec."""


class ExportError(AutomlpError):
    """A model folder cannot be written, or is incomplete or tampered with when loaded."""


class StorageUnreachable(BaseException):
    """The study's storage stayed unreachable for longer than study.storage_patience.

    A BaseException, like KeyboardInterrupt, on purpose: Optuna's optimize loop catches every Exception from a
    trial and then writes FAIL to the storage, which is exactly what cannot be reached. This one passes through,
    the trial stays RUNNING, and its heartbeat stops, so another worker or the next run fails and retries it.
    The CLI prints its message on one line and exits with status 2, as for an AutomlpError."""

