"""Every field of a record survives append -> get, as arrays or lists; export, fork,
compact, verify and stats do what the CLI does."""

import json

import numpy as np
import pytest

import trajdb


def full_record():
    return {
        "id": 10,
        "task": "t1",
        "env": "kitchen",
        "category": "cooking",
        "goal": "make tea",
        "plan": "boil then steep",
        "steps": [
            {"observation": "a kettle", "reasoning": "boil first", "action": "boil", "reward": 0.5},
            {"observation": "hot water", "reasoning": "steep", "action": "steep", "reward": None},
        ],
        "final_observation": "tea is ready",
        "outcome": {"success": True, "reward": 1.0},
        "meta": {"model": "m1", "note": "ünïcode ✓"},
        "provenance": {"kind": "imported", "parent": None, "steps": None},
        "created_ms": 1700000000000,
        "keys": {"goal": np.array([1.0, 0.0, 0.5], dtype=np.float32)},
        "step_keys": {"observation": np.array([[1.0, 0.0], [0.25, -2.0]], dtype=np.float32)},
    }


def make_spaces(db):
    db.create_space("goal", dims=3)
    db.create_space("observation", level="step", dims=2, metric="dot")


def test_every_field_round_trips(db):
    make_spaces(db)
    rec = full_record()
    assert db.append(rec) == 10
    got = db.get(10)
    for field in rec:
        if field in ("keys", "step_keys"):
            continue
        assert got[field] == rec[field], field
    assert got["keys"]["goal"].dtype == np.float32
    assert got["keys"]["goal"].shape == (3,)
    np.testing.assert_array_equal(got["keys"]["goal"], rec["keys"]["goal"])
    assert got["step_keys"]["observation"].shape == (2, 2)
    np.testing.assert_array_equal(got["step_keys"]["observation"], rec["step_keys"]["observation"])
    # The dict get returns is accepted by append (under a new id).
    again = dict(got, id=11)
    assert db.append(again) == 11
    assert {k: v for k, v in db.get(11).items() if k not in ("id", "keys", "step_keys")} == {
        k: v for k, v in got.items() if k not in ("id", "keys", "step_keys")
    }


def test_lists_float64_and_defaults(db):
    make_spaces(db)
    a = db.append({"goal": "g", "keys": {"goal": [0.5, 0.25, 1.0]}})
    b = db.append({"goal": "h", "keys": {"goal": np.array([0.5, 0.25, 1.0])}})  # float64: copied
    c = db.append({"goal": "i", "keys": {"goal": np.array([1, 2, 3], dtype=np.int64)}})
    assert (a, b, c) == (1, 2, 3)
    np.testing.assert_array_equal(db.get(a)["keys"]["goal"], db.get(b)["keys"]["goal"])
    np.testing.assert_array_equal(db.get(c)["keys"]["goal"], [1, 2, 3])
    g = db.get(a)
    assert g["steps"] == [] and g["outcome"] == {"success": None, "reward": None}
    assert g["provenance"]["kind"] == "self_generated" and g["created_ms"] > 0
    # A non-contiguous view is read correctly.
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    d = db.append({"goal": "j", "keys": {"goal": m[:, 1]}})
    np.testing.assert_array_equal(db.get(d)["keys"]["goal"], [1, 5, 9])
    # Step keys in Fortran order and as a strided view keep their logical (row) order.
    steps = [{"observation": "a"}, {"observation": "b"}, {"observation": "c"}]
    rows = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float32)
    for given in (np.asfortranarray(rows), np.array([[1, 0, 2], [3, 0, 4], [5, 0, 6]], np.float32)[:, ::2]):
        e = db.append({"goal": "k", "steps": steps, "step_keys": {"observation": given}})
        np.testing.assert_array_equal(db.get(e)["step_keys"]["observation"], rows)


def test_reopen_keeps_everything(path):
    with trajdb.open(path) as db:
        make_spaces(db)
        db.append(full_record())
        db.set_outcome(10, False, reward=-1.0)
    with trajdb.open(path, read_only=True) as db:
        assert db.read_only and len(db) == 1 and 10 in db and 11 not in db
        assert db.get(10)["outcome"] == {"success": False, "reward": -1.0}
        assert [s["name"] for s in db.spaces()] == ["goal", "observation"]
        assert db.spaces()[1] == {
            "name": "observation", "level": "step", "dims": 2, "metric": "dot",
            "elem": "f32", "embedder": None,
        }


def test_delete_compact_fork_verify_stats(db, tmp_path):
    make_spaces(db)
    ids = db.append_many([{"goal": f"g{i}", "keys": {"goal": [1.0, i, 0.0]}} for i in range(5)])
    assert ids == [1, 2, 3, 4, 5]
    db.delete(2)
    with pytest.raises(trajdb.NotFoundError):
        db.get(2)
    with pytest.raises(trajdb.NotFoundError):
        db.delete(2)
    s = db.stats()
    assert (s["trajectories"], s["deleted"]) == (4, 1)
    db.compact()
    assert db.stats()["deleted"] == 0 and db.ids() == [1, 3, 4, 5]
    v = db.verify()
    assert v["trajectories"] == 4 and v["rows"] == 4
    fork = tmp_path / "fork"
    db.fork(fork)
    with trajdb.open(fork) as f:
        assert f.ids() == [1, 3, 4, 5]
        assert f.get(4)["goal"] == "g3"


def test_export_jsonl_and_chat(db, tmp_path):
    make_spaces(db)
    db.append(full_record())
    db.append({"goal": "no steps", "outcome": {"success": False}})
    n = db.export(tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert n == 2 and len(lines) == 3
    assert [s["name"] for s in json.loads(lines[0])["trajdb_spaces"]] == ["goal", "observation"]
    rec = json.loads(lines[1])
    assert rec["goal"] == "make tea" and rec["keys"]["goal"] == [1.0, 0.0, 0.5]
    assert db.export(tmp_path / "s.jsonl", success_only=True) == 1
    assert db.export(tmp_path / "chat.jsonl", format="chat") == 1  # one has no steps
    chat = json.loads((tmp_path / "chat.jsonl").read_text())
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    with pytest.raises(trajdb.InvalidInputError):
        db.export(tmp_path / "x", format="csv")


def test_close_is_idempotent_and_final(path):
    db = trajdb.open(path)
    db.create_space("goal", dims=2)
    db.close()
    db.close()
    assert db.closed
    with pytest.raises(trajdb.Error, match="closed"):
        db.search("goal", [1.0, 0.0])
    # The lock is released: a new writer opens.
    with trajdb.open(path) as again:
        assert again.spaces()[0]["name"] == "goal"
