"""The exceptions trajdb raises. Each message is the engine's one line: what and where."""


class Error(Exception):
    """Base class of every trajdb error."""


class InvalidInputError(Error, ValueError):
    """Input was refused before anything was committed: a bad record dict, a vector of the
    wrong dtype, shape or dimensions, NaN or infinity, an unknown key space, a duplicate id,
    an unknown option name."""


class NotFoundError(Error, KeyError):
    """No live trajectory or episode has this id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ReadOnlyError(Error, PermissionError):
    """A write on a handle opened with ``read_only=True``."""


class LockedError(Error, OSError):
    """Another handle (in this or another process) holds the writer lock."""


class CorruptError(Error, OSError):
    """Bytes on disk do not form what the format says (damage, or a checksum mismatch)."""


class NotADatabaseError(Error, OSError):
    """The path is not a trajdb database (and was not created: read-only or create=False)."""


class IncompatibleVersionError(Error, OSError):
    """The files were written by a newer (or unknown) format version."""


class StorageError(Error, OSError):
    """An operating-system I/O call failed; after a failed write or sync the handle refuses
    further writes until reopened."""


__all__ = [
    "Error",
    "InvalidInputError",
    "NotFoundError",
    "ReadOnlyError",
    "LockedError",
    "CorruptError",
    "NotADatabaseError",
    "IncompatibleVersionError",
    "StorageError",
]
