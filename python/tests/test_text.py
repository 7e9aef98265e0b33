"""Key spaces with text embedders: the built-in hash embedder and Python callables fill
the keys of records that carry none; search_text and retrieve with text queries."""

import numpy as np
import pytest

import trajdb


class Letters:
    """A toy embedder: letter counts a..h, so similar words have similar vectors."""

    name = "letters"
    version = "2"

    def __init__(self):
        self.calls = 0

    def __call__(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), 8), np.float32)
        for i, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "h":
                    out[i, ord(ch) - ord("a")] += 1
            out[i, 7] += 0.01  # never all zero
        return out


def test_hash_embedder_fills_keys_and_search_text(path):
    with trajdb.open(path) as db:
        db.create_space("goal", dims=64, embedder="hash")
        db.create_space("action", level="step", dims=32, embedder="hash")
        a = db.append({"goal": "make a cup of tea",
                       "steps": [{"action": "boil water"}, {"action": "steep tea"}]})
        b = db.append({"goal": "plant tomato seeds", "steps": [{"action": "dig"}]})
        assert db.get(a)["keys"]["goal"].shape == (64,)
        assert db.get(a)["step_keys"]["action"].shape == (2, 32)
        assert db.search_text("goal", "make tea")[0].id == a
        assert db.search_text("goal", "tomato seeds")[0].id == b
        hits = db.search_text("action", "steep the tea", k=1)
        assert (hits[0].id, hits[0].step) == (a, 1)
        spaces = {s["name"]: s for s in db.spaces()}
        assert spaces["goal"]["embedder"] == {"name": "trajdb-hash", "version": "1", "dims": 64}
    # The hash embedder is recorded: a reopened handle embeds without being told.
    with trajdb.open(path) as db:
        c = db.append({"goal": "make green tea"})
        assert db.search_text("goal", "green tea", k=1)[0].id == c
        ex = db.retrieve({"goal": "make a cup of tea"}, ("action", "boil water"), k=1, window=0,
                         success_only=False)
        assert ex[0].id == a and ex[0].matched_step == 0


def test_callable_embedder(path):
    emb = Letters()
    with trajdb.open(path) as db:
        db.create_space("goal", dims=8, embedder=emb)
        db.create_space("observation", level="step", dims=8, embedder=emb, metric="dot")
        ids = db.append_many([
            {"goal": "aaa", "steps": [{"observation": "bbb"}, {"observation": "hhh"}]},
            {"goal": "ccc", "steps": [{"observation": "ddd"}]},
        ])
        np.testing.assert_array_equal(db.get(ids[0])["keys"]["goal"], emb(["aaa"])[0])
        # A record that carries its keys keeps them; the embedder is not called for it.
        before = emb.calls
        own = np.eye(8, dtype=np.float32)[2] + 0.5
        i = db.append({"goal": "zzz", "keys": {"goal": own},
                       "step_keys": {"observation": np.zeros((0, 8), np.float32)}})
        np.testing.assert_array_equal(db.get(i)["keys"]["goal"], own)
        assert emb.calls == before
        assert db.search_text("goal", "cc", k=1)[0].id == ids[1]
        assert db.search_text("observation", "hh", k=1)[0].step == 1
        assert db.spaces()[0]["embedder"] == {"name": "letters", "version": "2", "dims": 8}
    with trajdb.open(path) as db:
        # A callable is not stored: without it the handle cannot embed ...
        with pytest.raises(trajdb.InvalidInputError, match="no embedder"):
            db.search_text("goal", "aaa")
        # ... and giving it again (same name, version, dims) restores it.
        db.create_space("goal", dims=8, embedder=Letters())
        assert db.search_text("goal", "aaa", k=1)[0].id == 1

        # A different embedder is refused.
        def other(texts):
            return np.ones((len(texts), 8), np.float32)

        with pytest.raises(trajdb.InvalidInputError, match="different definition"):
            db.create_space("goal", dims=8, embedder=other)


def test_bad_embedders(db):
    with pytest.raises(trajdb.InvalidInputError, match="named after a text field"):
        db.create_space("summary", dims=4, embedder="hash")
    with pytest.raises(trajdb.InvalidInputError, match="is not \"hash\""):
        db.create_space("goal", dims=4, embedder="bert")
    with pytest.raises(trajdb.InvalidInputError, match="callable"):
        db.create_space("goal", dims=4, embedder=42)
    db.create_space("goal", dims=4, embedder=lambda texts: np.ones((len(texts), 3), np.float32))
    with pytest.raises(trajdb.InvalidInputError, match=r"expected an array of shape \(1, 4\)"):
        db.append({"goal": "x"})

    def boom(texts):
        raise RuntimeError("model server down")

    db.create_space("plan", dims=4, embedder=boom)
    with pytest.raises(RuntimeError, match="model server down"):
        db.append({"goal": "x", "plan": "p", "keys": {"goal": [1.0, 0.0, 0.0, 0.0]}})
    assert len(db) == 0
