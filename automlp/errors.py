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
