"""examples/python/react_agent.py end to end against a local stub OpenAI-compatible server
(chat completions and embeddings), through the real `openai` package."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import trajdb

pytest.importorskip("openai", reason="the example agent needs the `openai` package (pip install openai)")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python" / "react_agent.py"
DIMS = 64


def embed(text):
    v = np.zeros(DIMS)
    for w in re.findall(r"[a-z]+", text.lower()):
        v[zlib.crc32(w.encode()) % DIMS] += 1.0
    v[0] += 0.01
    return (v / np.linalg.norm(v)).tolist()


def reply(prompt):
    """A deterministic stand-in for a model: imitate the example step whose observation
    shows the same progress; otherwise take the first option not yet done."""
    examples, _, now = prompt.partition("\n\nNow:\n")
    if "Reply with exactly one of the options." not in prompt:
        done = re.search(r"Done so far: ([^.]*)\.", now)
        return f"After {done.group(1) if done else 'planning'}, do the next step."
    done = re.search(r"Done so far: ([^.]*)\.", now).group(1)
    options = re.search(r"Options: (.*)", now).group(1).split(" | ")
    goal = re.search(r"Goal: (.*)", now).group(1)
    for block in examples.split("Goal: ")[1:]:
        if block.split("\n", 1)[0] != goal:
            continue
        shown = re.findall(r"Observation: Done so far: ([^.]*)\..*\nThought: .*\nAction: (.*)", block)
        for ex_done, action in shown:
            if ex_done == done and action in options:
                return action
    return options[0]


class Stub(BaseHTTPRequestHandler):
    calls = {"chat": 0, "embeddings": 0}

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.endswith("/chat/completions"):
            Stub.calls["chat"] += 1
            text = reply(body["messages"][-1]["content"])
            out = {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text}}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        elif self.path.endswith("/embeddings"):
            Stub.calls["embeddings"] += 1
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            out = {"object": "list", "model": body["model"],
                   "data": [{"object": "embedding", "index": i, "embedding": embed(t)} for i, t in enumerate(texts)],
                   "usage": {"prompt_tokens": 1, "total_tokens": 1}}
        else:
            self.send_error(404)
            return
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def run_example(server, *args):
    env = dict(os.environ, OPENAI_BASE_URL=server, OPENAI_API_KEY="stub")
    p = subprocess.run([sys.executable, str(EXAMPLE), *args], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_agent_runs_with_server_embeddings(server, tmp_path):
    db_path = str(tmp_path / "agent")
    out = run_example(server, "--db", db_path, "--episodes", "6", "--embed-model", "stub-embed")
    assert "episodes 6:" in out
    assert Stub.calls["embeddings"] > 0 and Stub.calls["chat"] > 0
    with trajdb.open(db_path, read_only=True) as db:
        assert len(db) == 6
        eps = db.episodes()
        assert len(eps) == 6 and all(e["outcome"] is not None for e in eps)
        assert {s["name"]: s["embedder"]["name"] for s in db.spaces()} == {
            "goal": "openai:stub-embed", "observation": "openai:stub-embed",
            "reasoning": "openai:stub-embed"}
        for tid in db.ids():
            t = db.get(tid)
            assert t["keys"]["goal"].shape == (DIMS,)
            assert t["step_keys"]["observation"].shape == (len(t["steps"]), DIMS)


def test_agent_imitates_stored_demonstrations(server, tmp_path):
    spec = importlib.util.spec_from_file_location("react_agent", EXAMPLE)
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    db_path = str(tmp_path / "agent")
    with trajdb.open(db_path) as db:
        db.create_space("goal", dims=256, embedder="hash")
        for field in ("observation", "reasoning"):
            db.create_space(field, level="step", dims=256, embedder="hash")
        for goal, actions in agent.RECIPES.items():
            env = agent.Kitchen(goal, seed=1)
            obs, steps = env.observation(), []
            for i, a in enumerate(actions):
                # The thought the stub model writes at this point, so "act" retrieval finds it.
                thought = f"After {', '.join(actions[:i]) or 'nothing'}, do the next step."
                steps.append({"observation": obs, "reasoning": thought, "action": a})
                obs, _, ok = env.step(a)
            assert ok
            db.append({"goal": goal, "plan": "demo", "steps": steps, "outcome": {"success": True}})
    out = run_example(server, "--db", db_path, "--episodes", "8")
    assert "success first half 4/4, second half 4/4" in out, out
    with trajdb.open(db_path, read_only=True) as db:
        used = db.utilities()
        assert set(used) >= {1, 2, 3}
        assert all(db.utility(i).q is not None for i in (1, 2, 3) if db.utility(i).retrievals)
        stages = {ev["stage"] for e in db.episodes() for ev in e["events"]}
        assert stages == {"plan", "reason", "act"}
