"""Findings of a new-user trial: text embedding follows the engine's rule (a text with nothing
to embed gets no key), and bad arguments raise InvalidInputError naming them."""

import numpy as np
import pytest

import trajdb


def test_hash_text_without_features_gets_no_key_and_is_stored(db):
    db.create_space("goal", dims=16, embedder="hash")
    db.create_space("plan", dims=16, embedder="hash")
    db.create_space("observation", level="step", dims=16, embedder="hash")
    a = db.append({"goal": "x"})  # no plan, no steps
    t = db.get(a)
    assert "goal" in t["keys"] and "plan" not in t["keys"]
    b = db.append({"goal": "!!!", "plan": "go north"})
    assert "goal" not in db.get(b)["keys"] and "plan" in db.get(b)["keys"]
    c, d = db.append_many([
        {"goal": "open the door", "steps": [{"observation": ""}, {"observation": "a room"}]},
        {"goal": "🙂", "steps": [{"observation": "hall"}]},
    ])
    assert "observation" not in db.get(c)["step_keys"]
    assert db.get(d)["step_keys"]["observation"].shape == (1, 16)
    assert len(db) == 4
    # Not found by searches of the space it has no key in.
    assert all(h.id != b for h in db.search_text("goal", "x", k=10))
    assert db.search_text("goal", "x", k=1)[0].id == a


def test_nothing_to_embed_query_is_invalid_input(db):
    db.create_space("goal", dims=16, embedder="hash")
    db.append({"goal": "x"})
    with pytest.raises(trajdb.InvalidInputError, match="nothing to embed"):
        db.search_text("goal", "")
    with pytest.raises(trajdb.InvalidInputError, match="nothing to embed"):
        db.retrieve({"goal": "!!!"})


def test_callable_is_never_called_with_missing_or_empty_text(db):
    seen = []

    def emb(texts):
        seen.append(list(texts))
        return np.ones((len(texts), 4), np.float32)

    db.create_space("goal", dims=4, embedder=emb)
    db.create_space("plan", dims=4, embedder=emb)
    db.create_space("category", dims=4, embedder=emb)
    db.create_space("action", level="step", dims=4, embedder=emb)
    i = db.append({"goal": "g"})  # no plan, no category, no steps
    assert seen == [["g"]]
    t = db.get(i)
    assert set(t["keys"]) == {"goal"} and "action" not in t["step_keys"]
    j = db.append({"goal": "g", "plan": "", "steps": [{"action": "go"}, {"action": ""}]})
    assert all(all(s.strip() for s in call) for call in seen)
    assert "plan" not in db.get(j)["keys"] and "action" not in db.get(j)["step_keys"]


@pytest.mark.parametrize("call,name", [
    (lambda db: db.get(-1), "id"),
    (lambda db: db.delete(-1), "id"),
    (lambda db: db.set_outcome(-1, True), "id"),
    (lambda db: db.utility(-1), "id"),
    (lambda db: db.search("goal", [1.0, 0.0, 0.0], k=-1), "k"),
    (lambda db: db.search("goal", [1.0, 0.0, 0.0], as_of=-1), "as_of"),
    (lambda db: db.search("goal", [1.0, 0.0, 0.0], exclude=[-3]), "exclude[0]"),
    (lambda db: db.retrieve({"goal": [1.0, 0.0, 0.0]}, k=-1), "k"),
    (lambda db: db.retrieve({"goal": [1.0, 0.0, 0.0]}, window=-2), "window"),
    (lambda db: db.set_episode_outcome(-1, True), "episode"),
    (lambda db: db.get(2**64), "id"),
])
def test_negative_or_huge_integers_are_invalid_input_naming_the_argument(db, call, name):
    db.create_space("goal", dims=3)
    with pytest.raises(trajdb.InvalidInputError, match=rf"^{name.replace('[', '.').replace(']', '.')} must be a non-negative integer"):
        call(db)


def test_numpy_integer_ids_are_accepted(db):
    db.create_space("goal", dims=3)
    i = db.append({"goal": "g", "keys": {"goal": [1.0, 0.0, 0.0]}})
    ids = np.array(db.ids(), dtype=np.int64)
    assert db.get(ids[0])["goal"] == "g"
    assert ids[0] in db and -1 not in db
    assert db.search("goal", [1.0, 0.0, 0.0], k=np.int64(1))[0].id == i
    db.set_outcome(np.uint32(i), True)
    db.log_retrievals(db.begin_episode(), [np.int64(i)])
    assert db.utility(np.int64(i)).retrievals == 1
    with pytest.raises(TypeError):
        db.get("1")


def test_a_bool_is_not_accepted_as_a_count_or_an_id(db):
    db.create_space("goal", dims=3)
    i = db.append({"goal": "g", "keys": {"goal": [1.0, 0.0, 0.0]}})
    with pytest.raises(TypeError, match="got bool"):
        db.search("goal", [1.0, 0.0, 0.0], k=True)
    with pytest.raises(TypeError, match="got bool"):
        db.get(True)
    assert db.search("goal", [1.0, 0.0, 0.0], k=1)[0].id == i
    with pytest.raises(TypeError, match="got bool"):
        db.search("goal", [1.0, 0.0, 0.0], exclude=[True])
    with pytest.raises(TypeError, match="got bool"):
        db.log_retrievals(db.begin_episode(), [True])
    with pytest.raises(TypeError, match="dims must be an int, got bool"):
        db.create_space("flag", dims=True)
    assert [s["name"] if isinstance(s, dict) else s.name for s in db.spaces()] == ["goal"]


def test_a_log_cut_before_its_checkpoint_warns_at_open_and_is_in_the_open_report(tmp_path):
    path = tmp_path / "cut"
    db = trajdb.open(path)
    db.create_space("goal", dims=3)
    db.append({"goal": "a", "keys": {"goal": [1.0, 0.0, 0.0]}})
    db.sync()
    boundary = (path / "log").stat().st_size
    db.append({"goal": "b", "keys": {"goal": [0.0, 1.0, 0.0]}})
    db.close()
    full = (path / "log").stat().st_size
    with open(path / "log", "r+b") as f:
        f.truncate(boundary)
    with pytest.warns(RuntimeWarning, match="committed frames are missing"):
        db = trajdb.open(path, read_only=True)
    assert db.open_report()["log_cut_at"] == [boundary, full]
    assert len(db.ids()) == 1
    db.close()
    # A writable open refuses the cut log (nothing is written) until the loss is accepted.
    with pytest.raises(trajdb.CorruptError, match="accept_log_cut"):
        trajdb.open(path)
    assert (path / "log").stat().st_size == boundary
    with pytest.warns(RuntimeWarning, match="committed frames are missing"):
        db = trajdb.open(path, accept_log_cut=True)
    assert len(db.ids()) == 1
    db.close()
    db = trajdb.open(path)
    assert db.open_report()["log_cut_at"] is None
    db.verify()
    db.close()


def test_lone_surrogate_is_invalid_input_naming_the_field(db):
    db.create_space("goal", dims=16, embedder="hash")
    with pytest.raises(trajdb.InvalidInputError, match=r"trajectory: goal: .*lone surrogate"):
        db.append({"goal": "a\ud800b"})
    with pytest.raises(trajdb.InvalidInputError, match=r"trajectories\[1\]: steps\[0\].action: .*lone surrogate"):
        db.append_many([{"goal": "a"}, {"goal": "b", "steps": [{"action": "\ud800"}]}])
    with pytest.raises(trajdb.InvalidInputError, match=r"text: .*lone surrogate"):
        db.search_text("goal", "\ud800")
    assert len(db) == 0


def test_nan_reward_is_invalid_input_naming_outcome_reward(db):
    db.create_space("goal", dims=3)
    with pytest.raises(trajdb.InvalidInputError, match=r"outcome\.reward"):
        db.append({"goal": "g", "outcome": {"success": True, "reward": float("nan")}})
    i = db.append({"goal": "g"})
    with pytest.raises(trajdb.InvalidInputError, match=r"outcome\.reward"):
        db.set_outcome(i, True, reward=float("inf"))


def test_space_conflict_shows_both_definitions_readably(db):
    db.create_space("goal", dims=3)
    with pytest.raises(trajdb.InvalidInputError) as e:
        db.create_space("goal", dims=4, metric="dot")
    msg = str(e.value)
    assert "(trajectory level, 3 dims, cosine)" in msg and "(trajectory level, 4 dims, dot)" in msg
    assert "SpaceDef" not in msg and "{" not in msg


def test_utility_of_unknown_id_is_not_found(db):
    with pytest.raises(trajdb.NotFoundError):
        db.utility(999)
    db.create_space("goal", dims=3)
    i = db.append({"goal": "g"})
    assert db.utility(i).retrievals == 0 and db.utility(i).q is None


def test_numpy_scalars_in_a_record_are_taken_as_the_numbers_they_hold(db):
    db.create_space("goal", dims=3)
    i = db.append({"goal": "g", "id": np.int64(7), "created_ms": np.uint64(1_700_000_000_000),
                   "outcome": {"success": True, "reward": np.float32(0.5)},
                   "keys": {"goal": [1.0, 0.0, 0.0]}})
    assert i == 7
    t = db.get(7)
    assert t["created_ms"] == 1_700_000_000_000 and t["outcome"]["reward"] == 0.5
    with pytest.raises(trajdb.InvalidInputError, match="not JSON serializable"):
        db.append({"goal": "h", "meta": {"x": object()}})


def test_checkpoint_damage_found_after_open_is_in_the_open_report_and_fails_verify(tmp_path):
    path = tmp_path / "ckpt"
    db = trajdb.open(path, durability="buffered")
    db.create_space("goal", dims=3)
    db.append_many([{"goal": f"g{i}", "keys": {"goal": [1.0, float(i % 7), 0.5]}}
                    for i in range(2000)])
    want = [h.id for h in db.search("goal", [1.0, 2.0, 0.5], k=5)]
    db.close()
    ckpt = path / "checkpoint"
    data = bytearray(ckpt.read_bytes())
    assert len(data) > 96 + 65536 + 200, "needs a second checkpoint block"
    data[96 + 65536 + 100] ^= 0x40  # inside block 1: checked on first use, not at open
    ckpt.write_bytes(bytes(data))
    db = trajdb.open(path, read_only=True)
    assert db.open_report()["checkpoint_damage"] is None
    assert [h.id for h in db.search("goal", [1.0, 2.0, 0.5], k=5)] == want
    assert db.stats()["trajectories"] == 2000
    damage = db.open_report()["checkpoint_damage"]
    assert damage is not None and "block 1" in damage
    with pytest.raises(trajdb.CorruptError, match="checkpoint is damaged"):
        db.verify()
    db.close()


def test_a_damaged_last_frame_its_checkpoint_covers_is_refused_until_accepted(tmp_path):
    # Closed, so the checkpoint records every frame as committed: damage in the last one is
    # at rest, not a torn write, and a writer must not cut it unasked.
    path = tmp_path / "rot"
    db = trajdb.open(path)
    db.create_space("goal", dims=3)
    db.append({"goal": "a", "keys": {"goal": [1.0, 0.0, 0.0]}})
    db.append({"goal": "b", "keys": {"goal": [0.0, 1.0, 0.0]}})
    db.close()
    full = (path / "log").stat().st_size
    data = bytearray((path / "log").read_bytes())
    data[-12] ^= 0xFF
    (path / "log").write_bytes(bytes(data))
    with pytest.raises(trajdb.CorruptError, match="damage at rest"):
        trajdb.open(path)
    assert (path / "log").read_bytes() == bytes(data)
    with pytest.warns(RuntimeWarning, match="records them as committed"):
        db = trajdb.open(path, read_only=True)
    assert db.open_report()["damaged_committed_end"] == full
    assert len(db.ids()) == 1
    db.close()
    with pytest.warns(RuntimeWarning, match="records them as committed"):
        db = trajdb.open(path, accept_log_cut=True)
    assert len(db.ids()) == 1
    db.close()
    db = trajdb.open(path)
    assert db.open_report()["damaged_committed_end"] is None
    db.verify()
    db.close()
