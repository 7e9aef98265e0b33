"""Every bad input raises a clear trajdb exception, and nothing committed before is lost:
after each refusal the database holds exactly what it held before."""

import numpy as np
import pytest

import trajdb


@pytest.fixture
def seeded(db):
    db.create_space("goal", dims=3)
    db.create_space("observation", level="step", dims=2, metric="dot")
    db.append({"goal": "keep me", "steps": [{"observation": "x"}],
               "keys": {"goal": [1.0, 0.0, 0.0]}, "step_keys": {"observation": [[1.0, 1.0]]}})
    return db


def unchanged(db):
    assert db.ids() == [1]
    assert db.get(1)["goal"] == "keep me"
    assert db.verify()["trajectories"] == 1


GOOD_STEPS = [{"observation": "a"}, {"observation": "b"}]

BAD_RECORDS = [
    ("not a dict", ["goal", "x"], "a trajectory is a dict"),
    ("missing goal", {"task": "t"}, "missing field `goal`"),
    ("unknown field", {"goal": "g", "colour": "red"}, "unknown field `colour`"),
    ("wrong field type", {"goal": 5}, "invalid record"),
    ("bad step", {"goal": "g", "steps": [{"observation": 1}]}, "invalid record"),
    ("unserialisable", {"goal": "g", "meta": {"a": object()}}, "not a JSON-shaped record"),
    ("nan reward", {"goal": "g", "outcome": {"success": True, "reward": float("nan")}}, "outcome.reward"),
    ("2-D where 1-D", {"goal": "g", "keys": {"goal": np.ones((1, 3), np.float32)}}, "expected a 1-D array of shape (dims,), got shape (1, 3)"),
    ("1-D where 2-D", {"goal": "g", "steps": GOOD_STEPS, "step_keys": {"observation": np.ones(2, np.float32)}}, "expected a 2-D array of shape (n_steps, dims), got shape (2,)"),
    ("string dtype", {"goal": "g", "keys": {"goal": np.array(["a", "b", "c"])}}, "is not a number type"),
    ("str vector", {"goal": "g", "keys": {"goal": "abc"}}, "got a str"),
    ("wrong dims", {"goal": "g", "keys": {"goal": np.ones(4, np.float32)}}, "vector has 4 dimensions but key space `goal` has 3"),
    ("wrong step dims", {"goal": "g", "steps": GOOD_STEPS, "step_keys": {"observation": np.ones((2, 3), np.float32)}}, "observation[0]: vector has 3 dimensions"),
    ("step count", {"goal": "g", "steps": GOOD_STEPS, "step_keys": {"observation": np.ones((3, 2), np.float32)}}, "has 3 vectors for 2 steps"),
    ("nan key", {"goal": "g", "keys": {"goal": np.array([1, np.nan, 0], np.float32)}}, "keys.goal[1]: value NaN is not a finite"),
    ("inf key", {"goal": "g", "keys": {"goal": [1.0, float("inf"), 0.0]}}, "is not a finite"),
    ("f32 overflow", {"goal": "g", "keys": {"goal": [1e39, 0.0, 0.0]}}, "is not a finite"),
    ("f32 overflow from float64", {"goal": "g", "keys": {"goal": np.array([1e39, 0.0, 0.0])}}, "is not a finite"),
    ("zero cosine", {"goal": "g", "keys": {"goal": [0.0, 0.0, 0.0]}}, "all zeros"),
    ("unknown space", {"goal": "g", "keys": {"colour": [1.0]}}, "no key space named `colour`"),
    ("wrong level", {"goal": "g", "keys": {"observation": [1.0, 0.0]}}, "step-level key space"),
    ("keys not a dict", {"goal": "g", "keys": [1.0, 0.0, 0.0]}, "keys must be a dict"),
    ("duplicate id", {"id": 1, "goal": "g"}, "already stored"),
]


@pytest.mark.parametrize("name,record,message", BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_bad_record_is_refused_and_nothing_is_lost(seeded, name, record, message):
    with pytest.raises(trajdb.InvalidInputError) as e:
        seeded.append(record)
    assert message in str(e.value), str(e.value)
    assert isinstance(e.value, ValueError)
    unchanged(seeded)
    # The same record inside a batch: the whole batch is refused, naming the index.
    with pytest.raises(trajdb.InvalidInputError) as e:
        seeded.append_many([{"goal": "fine", "keys": {"goal": [0.0, 1.0, 0.0]}}, record])
    assert "trajectories[1]" in str(e.value) or "batch" in str(e.value)
    unchanged(seeded)
    # And the handle still works.
    assert seeded.search("goal", [1.0, 0.0, 0.0])[0].id == 1


def test_a_float64_past_float32_range_is_refused_without_a_numpy_warning(seeded):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(trajdb.InvalidInputError, match="is not a finite"):
            seeded.append({"goal": "g", "keys": {"goal": np.array([1e39, 0.0, 0.0])}})
        with pytest.raises(trajdb.InvalidInputError, match="is not a finite"):
            seeded.search("goal", np.array([0.0, -1e300, 1.0]))
    unchanged(seeded)


def test_batch_duplicates_and_non_iterables(seeded):
    with pytest.raises(trajdb.InvalidInputError, match="given twice"):
        seeded.append_many([{"id": 7, "goal": "a"}, {"id": 7, "goal": "b"}])
    with pytest.raises(trajdb.InvalidInputError, match="iterable"):
        seeded.append_many(5)
    unchanged(seeded)
    assert seeded.append_many([]) == []
    assert seeded.append_many(({"goal": f"g{i}"} for i in range(3))) == [2, 3, 4]


BAD_QUERIES = [
    ({"space": "goal", "vector": np.ones((2, 3), np.float32)}, "expected a 1-D array"),
    ({"space": "goal", "vector": np.ones(4, np.float32)}, "dimension"),
    ({"space": "goal", "vector": np.array([np.nan, 1, 0], np.float32)}, "not a finite 32-bit float"),
    ({"space": "goal", "vector": ["a", "b", "c"]}, "expected a 1-D vector"),
    ({"space": "nope", "vector": np.ones(3, np.float32)}, "nope"),
    ({"space": "goal", "vector": np.ones(3, np.float32), "provenance": "stolen"}, "provenance \"stolen\""),
]


@pytest.mark.parametrize("kwargs,message", BAD_QUERIES)
def test_bad_query_is_refused(seeded, kwargs, message):
    with pytest.raises(trajdb.InvalidInputError) as e:
        seeded.search(**kwargs)
    assert message in str(e.value), str(e.value)
    unchanged(seeded)


def test_bad_retrieve_and_spaces(seeded):
    with pytest.raises(trajdb.InvalidInputError, match="step-level"):
        seeded.retrieve({"observation": [1.0, 0.0]})
    with pytest.raises(trajdb.InvalidInputError, match="trajectory-level"):
        seeded.retrieve({"goal": [1.0, 0.0, 0.0]}, ("goal", [1.0, 0.0, 0.0]))
    with pytest.raises(trajdb.InvalidInputError, match="step_key must be a tuple"):
        seeded.retrieve({"goal": [1.0, 0.0, 0.0]}, step_key=5)
    with pytest.raises(trajdb.InvalidInputError, match="no embedder"):
        seeded.retrieve({"goal": "make tea"})
    with pytest.raises(trajdb.InvalidInputError, match="dims must be"):
        seeded.create_space("x", dims=0)
    with pytest.raises(trajdb.InvalidInputError, match="metric \"euclid\""):
        seeded.create_space("x", dims=2, metric="euclid")
    with pytest.raises(trajdb.InvalidInputError, match="level"):
        seeded.create_space("x", dims=2, level="episode")
    with pytest.raises(trajdb.InvalidInputError, match="different definition"):
        seeded.create_space("goal", dims=4)
    seeded.create_space("goal", dims=3)  # the same definition again is fine
    with pytest.raises(trajdb.NotFoundError) as e:
        seeded.set_outcome(99, True)
    assert isinstance(e.value, KeyError) and str(e.value) == "no trajectory with id 99"
    with pytest.raises(trajdb.InvalidInputError, match="finite"):
        seeded.set_outcome(1, True, reward=float("inf"))
    with pytest.raises(trajdb.NotFoundError):
        seeded.log_retrievals(42, [1])
    with pytest.raises(trajdb.InvalidInputError, match="stage"):
        seeded.log_retrievals(seeded.begin_episode(), [1], stage="dream")
    with pytest.raises(trajdb.InvalidInputError, match="durability"):
        trajdb.open(seeded.path + "-other", durability="never")
    with pytest.raises(trajdb.InvalidInputError, match="id must be a non-negative integer"):
        seeded.get(-1)
    unchanged(seeded)


def test_read_only_and_locked_and_not_a_database(path, tmp_path):
    with trajdb.open(path) as w:
        w.create_space("goal", dims=2)
        with pytest.raises(trajdb.LockedError) as e:
            trajdb.open(path)
        assert isinstance(e.value, OSError) and "LOCK" in str(e.value)
        with trajdb.open(path, read_only=True) as r:
            with pytest.raises(trajdb.ReadOnlyError):
                r.append({"goal": "g"})
            with pytest.raises(PermissionError):
                r.create_space("plan", dims=2)
    with pytest.raises(trajdb.NotADatabaseError):
        trajdb.open(tmp_path / "missing", read_only=True)
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file.txt").write_text("hi")
    with pytest.raises(trajdb.NotADatabaseError):
        trajdb.open(tmp_path / "stuff")


def test_corrupt_log_raises_corrupt_error(path):
    with trajdb.open(path) as db:
        db.create_space("goal", dims=2)
        for i in range(3):
            db.append({"goal": f"g{i}" * 20, "keys": {"goal": [1.0, float(i)]}})
    import os
    log = os.path.join(path, "log")
    data = bytearray(open(log, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(log, "wb").write(bytes(data))
    # Open trusts the checkpoint written at close (format-spec.md, "Checkpoint"), so damage
    # at rest in the commits it covers is found by verify(), with the file named.
    with trajdb.open(path) as db:
        with pytest.raises(trajdb.CorruptError) as e:
            db.verify()
        # An export that meets the damage leaves no partial file behind.
        out = os.path.join(os.path.dirname(path), "out.jsonl")
        with pytest.raises(trajdb.CorruptError):
            db.export(out)
        assert not os.path.exists(out)
    assert isinstance(e.value, OSError) and "log" in str(e.value)


def test_retrieve_without_any_key_is_refused(path):
    with trajdb.open(path) as db:
        db.create_space("goal", dims=2)
        db.append({"goal": "g", "outcome": {"success": True}, "keys": {"goal": [1.0, 0.0]}})
        with pytest.raises(trajdb.InvalidInputError, match="no trajectory key and no step key"):
            db.retrieve({}, k=3)


def test_newer_format_version_raises_incompatible_version_error(path):
    import os
    import struct
    import zlib
    with trajdb.open(path) as db:
        db.create_space("goal", dims=2)
    log = os.path.join(path, "log")
    data = bytearray(open(log, "rb").read())
    data[8:12] = struct.pack("<I", 99)  # header version (format-spec: offset 8, u32 LE)
    data[60:64] = struct.pack("<I", zlib.crc32(bytes(data[:60])))  # header CRC over bytes 0..60
    open(log, "wb").write(bytes(data))
    with pytest.raises(trajdb.IncompatibleVersionError) as e:
        trajdb.open(path)
    assert isinstance(e.value, OSError) and "99" in str(e.value)
