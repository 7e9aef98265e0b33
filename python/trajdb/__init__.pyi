"""trajdb in-process: an embedded database for LLM-agent trajectories.

Vectors are float32. Wherever a vector is taken, a 1-D ``numpy.ndarray`` of dtype float32
is copied once into the engine without a Python object per element; an array of another
numeric dtype (float64, int) is converted to float32 first (one extra copy, silently); a
list of numbers is accepted too. Values must be finite and match the key space's ``dims``.

Errors: every failure raises a subclass of :class:`Error` (see below), with the engine's
one-line message. Input errors are raised before anything is written; nothing committed
before is lost.

Threads: the GIL is released during append, append_many, search, search_text, retrieve,
get, fork, compact, verify, export and sync, so several Python threads can search in
parallel while another appends. A ``Database`` may be shared between threads.
"""

import os
from typing import Any, Callable, Iterable, Literal, Optional, Sequence, Union, final

import numpy as np
import numpy.typing as npt

__version__: str
__all__ = [
    "open", "Database", "Episode", "Example", "Hit", "Utility", "Error", "InvalidInputError",
    "NotFoundError", "ReadOnlyError", "LockedError", "CorruptError", "NotADatabaseError",
    "IncompatibleVersionError", "StorageError",
]

_Vector = Union[npt.NDArray[np.float32], npt.NDArray[Any], Sequence[float]]
"""A 1-D vector of shape ``(dims,)``, float32 preferred."""
_Matrix = Union[npt.NDArray[np.float32], npt.NDArray[Any], Sequence[Sequence[float]]]
"""A 2-D array of shape ``(n, dims)``, float32 preferred."""
_TextEmbedder = Callable[[list[str]], _Matrix]
"""``list[str] -> ndarray (len(texts), dims) float32``. Optional attributes ``name`` and
``version`` (str) are recorded in the key space; by default its ``__qualname__`` and "1"."""
_Trajectory = dict[str, Any]
"""A dict in the JSONL record shape (README "JSONL trajectory records"): ``goal`` (required),
``id``, ``task``, ``env``, ``category``, ``plan``, ``steps`` (list of dicts with
``observation``, ``reasoning``, ``action``, ``reward``), ``final_observation``, ``outcome``
(``{"success": bool|None, "reward": float|None}``), ``meta`` (str -> str), ``provenance``,
``created_ms`` and ``keys`` (space name -> :data:`_Vector`) and ``step_keys`` (space name ->
:data:`_Matrix` of shape ``(len(steps), dims)``). Unknown fields are refused."""
_Provenance = Literal["self_generated", "imported", "relabelled"]
_Stage = Literal["plan", "reason", "act", "other"]
_Path = Literal[
    "graph",
    "exact_requested",
    "exact_below_threshold",
    "exact_no_graph",
    "exact_selective_filter",
    "exact_short",
    "exact_wide_beam",
    "exact_candidates_short",
]

class Error(Exception):
    """Base class of every trajdb error."""

class InvalidInputError(Error, ValueError):
    """Refused input (bad record dict, dtype, shape, dims, NaN, unknown space, duplicate id,
    unknown option). Nothing was written."""

class NotFoundError(Error, KeyError):
    """No live trajectory or episode with this id."""

class ReadOnlyError(Error, PermissionError):
    """A write on a read-only handle."""

class LockedError(Error, OSError):
    """Another handle holds the writer lock of this database."""

class CorruptError(Error, OSError):
    """Damaged bytes on disk (with file and byte offset in the message)."""

class NotADatabaseError(Error, OSError):
    """The path is not a trajdb database."""

class IncompatibleVersionError(Error, OSError):
    """Files written by a newer or unknown format version."""

class StorageError(Error, OSError):
    """An I/O call failed; after a failed write or sync the handle refuses writes until
    reopened."""

def open(
    path: Union[str, os.PathLike[str]],
    *,
    durability: Literal["sync", "group", "buffered"] = "sync",
    read_only: bool = False,
    create: bool = True,
    exact_below_rows: int = 20000,
    accept_log_cut: bool = False,
) -> Database:
    """Opens (by default creating) the database in directory ``path``.

    durability: "sync" syncs every commit before returning (default); "group" shares one
    sync among concurrent commits; "buffered" leaves commits to the OS until ``sync()`` or
    ``close()`` (a power cut can lose the latest, never part of one).
    read_only: no writer lock is taken; see changes of a writer with ``refresh()``.
    exact_below_rows: ``search`` and ``retrieve`` (with ``exact=None``, their default)
    scan a key space exactly when it holds fewer rows than this, even when it has a graph
    index (``build_graph``); at or above it they walk the graph. 0: every space with a
    graph uses it.
    accept_log_cut: open for writing a log that ends before the commits its checkpoint
    records (cut short: restored from an older copy, truncated), or whose last frames are
    damaged although the checkpoint records them as committed (damage at rest), giving
    those commits up for good; without it such a writable open raises CorruptError naming
    the log, so it can be restored first (read-only opens always work and warn).

    Raises LockedError (another writer), NotADatabaseError, CorruptError,
    IncompatibleVersionError, StorageError, InvalidInputError (unknown durability).
    """

@final
class Hit:
    """One search result."""

    @property
    def id(self) -> int:
        """Trajectory id."""
    @property
    def step(self) -> Optional[int]:
        """Matched step index (step-level spaces), else None."""
    @property
    def score(self) -> float:
        """Similarity, higher is better: cosine in [-1, 1], dot product, or -L2 distance."""

@final
class Example:
    """One retrieved in-context example."""

    @property
    def id(self) -> int: ...
    @property
    def score(self) -> float:
        """Ranking score: trajectory score (+ step score when a step key was given)."""
    @property
    def traj_score(self) -> float:
        """Mean similarity over the trajectory-level keys."""
    @property
    def step_score(self) -> Optional[float]:
        """Best step similarity, when a step key was given."""
    @property
    def matched_step(self) -> Optional[int]:
        """The best-matching step, when a step key was given."""
    @property
    def window(self) -> tuple[int, int]:
        """Steps ``[start, end)`` kept in ``trajectory["steps"]``."""
    @property
    def trajectory(self) -> _Trajectory:
        """The trajectory dict (without keys), its steps cut to ``window``."""

@final
class Utility:
    """Usage counters of one trajectory."""

    @property
    def retrievals(self) -> int:
        """Times retrieved over all episodes."""
    @property
    def episodes(self) -> int:
        """Episodes that retrieved it at least once."""
    @property
    def labelled_retrievals(self) -> int:
        """Retrievals in episodes whose outcome is known."""
    @property
    def success_retrievals(self) -> int:
        """Retrievals in successful episodes."""
    @property
    def q(self) -> Optional[float]:
        """Q = success_retrievals / labelled_retrievals; None while no episode that retrieved
        it has an outcome."""

@final
class Episode:
    """An episode (a context manager). ``ep.log(...)`` records retrievals; setting
    ``ep.outcome`` commits the outcome at once (it may also be set later with
    ``Database.set_episode_outcome``)."""

    @property
    def id(self) -> int: ...
    @property
    def outcome(self) -> Optional[bool]: ...
    @outcome.setter
    def outcome(self, value: Optional[bool]) -> None: ...
    def log(self, items: Iterable[Union[Example, Hit, int]], stage: _Stage = "other") -> None:
        """Logs retrievals of this episode, one commit. An Example logs its matched step, a
        Hit its step. Raises NotFoundError for an unknown trajectory id."""
    def __enter__(self) -> Episode: ...
    def __exit__(self, *args: object) -> bool: ...

@final
class Database:
    """An open database; share it between threads freely. Use as a context manager or call
    ``close()``.

    Integer arguments (ids, ``k``, ``window``, ``as_of``, ``exclude``) take Python or numpy
    integers; a negative or too-large one raises InvalidInputError naming the argument, a
    non-integer TypeError."""

    @property
    def path(self) -> str: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def commit_seq(self) -> int:
        """Sequence number of the last commit (the ``as_of`` of a read view)."""
    def __enter__(self) -> Database: ...
    def __exit__(self, *args: object) -> bool: ...
    def __len__(self) -> int:
        """Live trajectories."""
    def __contains__(self, id: int, /) -> bool: ...
    def close(self) -> None:
        """Syncs and closes; releases the writer lock. Idempotent. Later calls raise Error."""
    def create_space(
        self,
        name: str,
        *,
        dims: int,
        level: Literal["trajectory", "step"] = "trajectory",
        metric: Literal["cosine", "dot", "l2"] = "cosine",
        embedder: Union[None, Literal["hash"], _TextEmbedder] = None,
    ) -> None:
        """Creates a key space, or checks that an existing one has this definition.

        dims: 1..=65536. embedder: "hash" (the built-in feature-hashing embedder) or a
        callable; the space must then be named after a text field of its level
        (trajectory: goal, plan, category, task; step: observation, reasoning, action) and
        ``append`` fills its keys from that text when a record carries none. A callable is
        not stored: after reopening, call create_space again with it.
        Raises InvalidInputError (bad dims, name, level, metric; a different existing
        definition).
        """
    def spaces(self) -> list[dict[str, Any]]:
        """Key spaces in creation order: dicts with name, level, dims, metric, elem and
        embedder (None or {name, version, dims})."""
    def append(self, trajectory: _Trajectory) -> int:
        """Appends one trajectory (one atomic commit) and returns its id.

        Keys: ``keys[name]`` a 1-D vector ``(dims,)``; ``step_keys[name]`` a 2-D array
        ``(len(steps), dims)``. Raises InvalidInputError (not a dict, unknown field, missing
        goal, wrong dtype/shape/dims, NaN/inf, unknown space, all-zero cosine key, duplicate
        id, a str with a lone surrogate, naming the field), ReadOnlyError, StorageError.

        Spaces with an embedder get their key from the record's text when the record has
        none, by the engine's rule: a text with nothing to embed (missing, empty, or only
        spaces, punctuation or emoji; for a step space, any step's text, or no steps) gets
        no key in that space. The record is stored and is not found by searches of that
        space. A callable embedder is never called for such a text.
        """
    def append_many(self, trajectories: Iterable[_Trajectory]) -> list[int]:
        """Appends trajectories in order sharing one sync; returns their ids.

        Every trajectory is parsed and checked first (record shape, key spaces, dtypes,
        shapes, dims, finite values, ids already stored or repeated in the batch): if any is
        refused, InvalidInputError names it (``trajectories[i]``) and nothing of the batch
        is written. Each trajectory is then its own atomic commit; an error found only at
        commit (an I/O error, or an explicit id equal to one assigned earlier in the same
        batch) leaves the ones before it committed and names ``batch[i]``.
        """
    def get(self, id: int) -> _Trajectory:
        """The trajectory dict with its current outcome; ``keys`` values are float32 arrays
        ``(dims,)``, ``step_keys`` values ``(n_steps, dims)``. Raises NotFoundError."""
    def delete(self, id: int) -> None:
        """Deletes (tombstones) a trajectory; ``compact()`` reclaims it. NotFoundError."""
    def set_outcome(self, id: int, success: Optional[bool], reward: Optional[float] = None) -> None:
        """Sets a trajectory's outcome after the fact. NotFoundError, InvalidInputError;
        TypeError when ``success`` is not a bool or None."""
    def ids(self) -> list[int]:
        """Ids of live trajectories in commit order."""
    def search(
        self,
        space: str,
        vector: _Vector,
        k: int = 10,
        *,
        success_only: bool = False,
        env: Optional[str] = None,
        task: Optional[str] = None,
        exclude: Optional[Sequence[int]] = None,
        provenance: Optional[_Provenance] = None,
        as_of: Optional[int] = None,
        exact: Optional[bool] = None,
        ef: int = 64,
    ) -> list[Hit]:
        """Top-k of key space ``space`` by similarity to ``vector`` ``(dims,)``, best first;
        filters are applied inside the scan (or the graph walk), so k hits come back when k
        rows qualify. Step-level spaces return one hit per matching step. ``as_of``: a commit
        sequence number (read view).

        ``exact``: None (default) chooses: through the space's graph index (``build_graph``)
        when it has one and at least ``exact_below_rows`` rows (``open``, default 20000),
        else the exact scan; True always scans exactly; False always walks the graph (as
        ``search_approx``). ``ef``: the walk's beam width. Scores are exact on every path;
        ``search_with_path`` says which answered. Raises InvalidInputError (unknown space,
        dims, NaN, 2-D array, ``ef`` 0, ``k`` 0 with ``exact=False``).
        """
    def search_with_path(
        self,
        space: str,
        vector: _Vector,
        k: int = 10,
        *,
        success_only: bool = False,
        env: Optional[str] = None,
        task: Optional[str] = None,
        exclude: Optional[Sequence[int]] = None,
        provenance: Optional[_Provenance] = None,
        as_of: Optional[int] = None,
        exact: Optional[bool] = None,
        ef: int = 64,
    ) -> tuple[list[Hit], _Path]:
        """``search``, also returning the path that answered: "graph", "exact_requested",
        "exact_below_threshold", "exact_no_graph", "exact_selective_filter", "exact_short" or
        "exact_wide_beam" (ef at least a quarter of the rows). Same arguments and errors."""
    def search_approx(
        self,
        space: str,
        vector: _Vector,
        k: int = 10,
        ef: int = 64,
        *,
        success_only: bool = False,
        env: Optional[str] = None,
        task: Optional[str] = None,
        exclude: Optional[Sequence[int]] = None,
        provenance: Optional[_Provenance] = None,
        as_of: Optional[int] = None,
    ) -> list[Hit]:
        """Approximate top-k through the space's graph index (see ``build_graph``); ``ef`` is
        the beam width. Hit scores are exact; filters apply during the walk, and the exact scan
        answers when there is no graph, the filter passes few rows or the walk comes back
        short, so k hits come back when k rows qualify. Raises InvalidInputError as search(),
        and for ``k`` 0 or ``ef`` 0.
        """
    def build_graph(self, space: str, m: int = 16, ef_construction: int = 100) -> dict[str, int]:
        """Builds (or catches up) the graph index of ``space`` and writes its file
        ``graph-N.idx``; returns {"nodes", "rows", "m", "ef_construction"}. Raises
        InvalidInputError (unknown space, m outside 2..=128, ef_construction outside
        m..=4096), ReadOnlyError."""
    def drop_graph(self, space: str) -> None:
        """Removes the graph index of ``space`` and its file; searches then scan exactly."""
    def check_graphs(self) -> None:
        """Checks every key space's graph now (rows against the log, adjacency against its
        checksum) rather than at its first search; a damaged graph is dropped and
        ``stats()["spaces"][i]["graph_discarded"]`` says why."""
    def search_many(
        self,
        space: str,
        vectors: _Matrix,
        k: int = 10,
        *,
        success_only: bool = False,
        env: Optional[str] = None,
        task: Optional[str] = None,
        exclude: Optional[Sequence[int]] = None,
        provenance: Optional[_Provenance] = None,
        as_of: Optional[int] = None,
    ) -> list[list[Hit]]:
        """``search`` for each row of ``vectors`` ``(m, dims)`` in one pass over the key rows
        (each block of rows is scored against every query while in cache); list ``i`` is
        exactly ``search(space, vectors[i], k, ...)``. Raises InvalidInputError (unknown
        space, not 2-D, dims, NaN; the bad row is named).
        """
    def search_text(
        self,
        space: str,
        text: str,
        k: int = 10,
        *,
        success_only: bool = False,
        env: Optional[str] = None,
        task: Optional[str] = None,
        exclude: Optional[Sequence[int]] = None,
        provenance: Optional[_Provenance] = None,
        as_of: Optional[int] = None,
        exact: Optional[bool] = None,
        ef: int = 64,
    ) -> list[Hit]:
        """``search`` with ``text`` embedded by the space's embedder (``exact`` and ``ef`` as
        there). InvalidInputError when the space has none in this handle, or the text has
        nothing to embed."""
    def retrieve(
        self,
        keys: dict[str, Union[_Vector, str]],
        step_key: Optional[tuple[str, Union[_Vector, str]]] = None,
        k: int = 10,
        window: int = 5,
        *,
        success_only: bool = True,
        env: Optional[str] = None,
        task: Optional[str] = None,
        exclude: Optional[Sequence[int]] = None,
        provenance: Optional[_Provenance] = None,
        as_of: Optional[int] = None,
        exact: Optional[bool] = None,
        ef: int = 64,
    ) -> list[Example]:
        """The paper's retrieval: a candidate's trajectory score is the mean of its
        similarities over ``keys`` (trajectory-level spaces); with a ``step_key`` (a
        step-level space) its best-matching step is found and candidates are ranked by
        trajectory score + step score; each example keeps ``window`` steps on each side of
        the matched step. A value given as str is embedded by the space's embedder.

        ``exact``: None (default) chooses: candidates from the graph indexes (as
        ``retrieve_approx``, beam width ``ef``) when every key space of the query has one
        and at least ``exact_below_rows`` rows, else exact (``Database::retrieve``); True
        always exact; False always the graphs. ``retrieve_with_path`` says which answered.
        InvalidInputError also for ``ef`` 0 and for ``k`` 0 with ``exact=False``.
        """
    def retrieve_with_path(
        self,
        keys: dict[str, Union[_Vector, str]],
        step_key: Optional[tuple[str, Union[_Vector, str]]] = None,
        k: int = 10,
        window: int = 5,
        *,
        success_only: bool = True,
        env: Optional[str] = None,
        task: Optional[str] = None,
        exclude: Optional[Sequence[int]] = None,
        provenance: Optional[_Provenance] = None,
        as_of: Optional[int] = None,
        exact: Optional[bool] = None,
        ef: int = 64,
    ) -> tuple[list[Example], dict[str, Any]]:
        """``retrieve``, also returning which path answered: ``{"path": str, "decided_by":
        Optional[str], "spaces": dict[str, str]}``. ``path`` is "graph",
        "exact_requested", "exact_below_threshold", "exact_no_graph" or
        "exact_candidates_short" (the graphs' candidates could not be shown to hold the
        top k, so the exact retrieve answered; see ``retrieve_approx``); ``decided_by``
        names the key space that made an automatic retrieve exact; ``spaces`` gives, for a
        retrieve through the graphs, each key space's own path (a space can still fall back
        to the scan: "exact_no_graph", "exact_selective_filter", "exact_short",
        "exact_wide_beam")."""
    def retrieve_approx(
        self,
        keys: dict[str, Union[_Vector, str]],
        step_key: Optional[tuple[str, Union[_Vector, str]]] = None,
        k: int = 10,
        window: int = 5,
        ef: int = 64,
        *,
        success_only: bool = True,
        env: Optional[str] = None,
        task: Optional[str] = None,
        exclude: Optional[Sequence[int]] = None,
        provenance: Optional[_Provenance] = None,
        as_of: Optional[int] = None,
    ) -> list[Example]:
        """retrieve() with candidates from the key spaces' graph indexes (build_graph);
        spaces without one are scanned exactly. ``ef``: beam width (at least ``k`` is used).
        The candidates answer only when the k-th best of them scores at least the mean of
        the trajectory keys' lowest kept scores plus the step key's (Fagin's threshold
        rule: no other trajectory can then score higher, as far as the walks found each
        space's best rows); otherwise ``ef`` is doubled once, then the exact retrieve
        answers (keys whose best trajectories disagree, such as independent keys).
        Raises what retrieve() raises, and InvalidInputError for ``k`` 0 or ``ef`` 0."""
    def retrieve_with_work(
        self,
        keys: dict[str, Union[_Vector, str]],
        step_key: Optional[tuple[str, Union[_Vector, str]]] = None,
        k: int = 10,
        window: int = 5,
        *,
        success_only: bool = True,
        env: Optional[str] = None,
        task: Optional[str] = None,
        exclude: Optional[Sequence[int]] = None,
        provenance: Optional[_Provenance] = None,
        as_of: Optional[int] = None,
    ) -> tuple[list[Example], dict[str, int]]:
        """``retrieve``, also returning the work the call did: ``{"step_rows_scored": int,
        "trajectories_visited": int, "step_bounds_read": int}`` (step-key rows scored, the
        trajectories whose step rows were scored, and the trajectories whose step-key bound
        was read; all 0 without a step key). Same arguments, results and errors."""
    def episode(self) -> Episode:
        """Begins an episode (one commit) and returns it."""
    def begin_episode(self) -> int:
        """Begins an episode; returns its id."""
    def log_retrievals(
        self, episode: int, items: Iterable[Union[Example, Hit, int]], stage: _Stage = "other"
    ) -> None:
        """Logs retrievals made during ``episode``. NotFoundError for unknown ids."""
    def set_episode_outcome(self, episode: int, success: Optional[bool]) -> None:
        """Sets, changes or (None) clears an episode's outcome; Q follows. TypeError when
        ``success`` is not a bool or None."""
    def episodes(self) -> list[dict[str, Any]]:
        """Every episode: {id, created_ms, outcome, events: [{id, step, stage}]}."""
    def utility(self, id: int) -> Utility:
        """Usage counters and Q of live trajectory ``id`` (zeros when never retrieved).
        NotFoundError when no live trajectory has this id."""
    def utilities(self) -> dict[int, Utility]:
        """Counters of every trajectory ever retrieved, by id."""
    def merge_from(self, src: "Database") -> dict[str, int]:
        """Merges ``src`` into this database: every trajectory and usage event of ``src``
        lands here exactly once; a repeat adds nothing, a grown source adds what is new.
        Returns what was added: {spaces, trajectories, trajectories_present,
        trajectory_outcomes, episodes, retrievals, retrievals_skipped, episode_outcomes,
        commits}. InvalidInputError (nothing written) for incompatible key spaces or a
        database without an origin id."""
    @property
    def origin(self) -> Optional[int]:
        """This database's origin id, or None for a log written before origin ids."""
    def fork(self, dst: Union[str, os.PathLike[str]]) -> None:
        """Writes a consistent copy of the database to the new directory ``dst``."""
    def compact(self) -> None:
        """Rewrites the log without deleted trajectories; ids and counters are kept."""
    def verify(self) -> dict[str, Any]:
        """Checks every frame and key row against the log, and every graph file: {frames,
        trajectories, rows, key_file_rows, graph_rows (graph nodes checked), stale_graphs
        (list of "space (graph-N.idx): why" for sound graph files that index other rows and are not
        used)}. Raises CorruptError."""
    def stats(self) -> dict[str, Any]:
        """Counts and sizes: trajectories, steps, deleted, successes, episodes, commit_seq,
        log_bytes, exact_below_rows (this handle's threshold, see ``open``), spaces (per
        space: definition, rows, live_rows, file_bytes, graph_rows (rows its graph index
        covers; None without one), auto_uses_graph (whether ``search``/``retrieve`` with
        ``exact=None`` walk its graph: it has one and ``rows >= exact_below_rows``) and
        graph_discarded (why its graph file was not used: damaged, another log's; the graph
        then restarts empty, searches scan the rows it does not cover exactly, a writer's
        searches rebuild it 256 rows each (a read-only handle's only when it is at most
        4,096 rows or a sixteenth behind) and ``build_graph`` rebuilds it at once; None
        otherwise))."""
    def open_report(self) -> dict[str, Any]:
        """What opening found: truncated_bytes, torn_reason, cut_file, cut_file_error,
        checkpoint_end, checkpoint_ignored, checkpoint_error, log_cut_at ([log length,
        covered end] when committed frames are missing from the end of the log),
        damaged_committed_end (the checkpoint's covered end when the log's damaged tail
        lies before it: damage at rest, not a torn write), and
        checkpoint_damage (a damaged checkpoint block found after open, when this handle
        then answered from the log; None otherwise). `open` warns (RuntimeWarning) when a
        tail was cut or committed frames are missing."""
    def sync(self) -> None:
        """Makes every commit so far durable (for durability="buffered")."""
    def refresh(self) -> int:
        """Read-only handles: applies commits made since opening; returns how many records.
        A writable handle is always current and returns 0."""
    def export(
        self,
        path: Union[str, os.PathLike[str]],
        format: Literal["jsonl", "chat"] = "jsonl",
        *,
        success_only: bool = False,
    ) -> int:
        """Writes the trajectories to ``path`` as ``trajdb export`` does: "jsonl" (key-space
        header line, then one record per line; ``trajdb import`` reads it) or "chat"
        (``{"messages": [...]}`` per trajectory with steps). Returns the records written."""
