"""The exceptions automlp raises on purpose. Everything the user can fix is an AutomlpError."""


class AutomlpError(Exception):
    """Root of automlp's errors: the CLI prints its message on one line and exits with status 2."""


class SpecError(AutomlpError):
    """The spec file is missing, unreadable or invalid."""


class DataError(AutomlpError):
    """The data named by the spec cannot be read or used as asked."""


class StorageError(AutomlpError):
    """The study storage cannot be opened, or holds a study that does not fit the spec."""


class ExportError(AutomlpError):
    """A model folder cannot be written, or is incomplete or tampered with when loaded."""
