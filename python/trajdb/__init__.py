"""trajdb in-process: an embedded database for LLM-agent trajectories.

>>> import numpy as np, trajdb
>>> with trajdb.open("/tmp/db") as db:
...     db.create_space("goal", dims=3)
...     tid = db.append({"goal": "make tea", "outcome": {"success": True},
...                      "keys": {"goal": np.array([1, 0, 0], dtype=np.float32)}})
...     db.search("goal", np.array([1, 0.1, 0], dtype=np.float32), k=5)

See ``__init__.pyi`` for every signature with shapes, dtypes and errors.
"""

from ._errors import (
    CorruptError,
    Error,
    IncompatibleVersionError,
    InvalidInputError,
    LockedError,
    NotADatabaseError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
)
from ._native import Database, Episode, Example, Hit, Utility, open

__version__ = "0.1.0"

__all__ = [
    "open",
    "Database",
    "Episode",
    "Example",
    "Hit",
    "Utility",
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
