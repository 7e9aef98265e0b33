#!/usr/bin/env python3
"""A scripted environment speaking the trajdb environment protocol v1, for tests.

The game ("vault"): task COLOR-N asks to fetch the COLOR gem from vault N. The first action
must be `take COLOR key`, the second `open COLOR chest`; each earns reward 0.5. Wrong actions change nothing (the
observation stays the same). Admissible actions are always given (5, then 4). Tasks: 3
colours x 12 vaults; the train split holds vaults 0-7 (24 tasks), the test split vaults 8-11
(12 tasks). No test task is a train task, but what solves it is what solved the train tasks
of its colour, so imitating train successes solves test tasks and exploring rarely does.

It checks every request strictly (keys and types); a bad request gets {"error": ...}.

Options:
  --log FILE          append every request line to FILE
  --fault KIND        misbehave once: error | malformed | missing-field | not-object |
                      crash | hang | long-line | bad-hello
  --at OP:N           ...at the N-th request of OP (1-based), e.g. reset:3
  --no-achieved       reply {"error": "unknown op achieved"} to `achieved`
"""
import json
import sys
import time

COLORS = ["red", "blue", "green"]
TRAIN = [f"{c}-{n}" for n in range(8) for c in COLORS]
TEST = [f"{c}-{n}" for n in range(8, 12) for c in COLORS]
ALL = TRAIN + TEST

args = sys.argv[1:]
opt = {}
i = 0
while i < len(args):
    if args[i] in ("--log", "--fault", "--at"):
        opt[args[i]] = args[i + 1]
        i += 2
    else:
        opt[args[i]] = True
        i += 1
fault = opt.get("--fault")
at_op, at_n = (opt.get("--at") or "none:0").split(":")
at_n = int(at_n)
counts = {}
log = open(opt["--log"], "a") if "--log" in opt else None


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


SHAPES_OF = {
    "hello": {"op": str, "protocol": int},
    "tasks": {"op": str, "split": str, "seed": int},
    "reset": {"op": str, "task": str, "seed": int},
    "step": {"op": str, "action": str},
    "achieved": {"op": str},
    "close": {"op": str},
}


def check(req):
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        return "request is not an object with a string `op`"
    want = SHAPES_OF.get(req["op"])
    if want is None:
        return f"unknown op {req['op']}"
    if set(req) != set(want):
        return f"{req['op']}: keys {sorted(req)} != {sorted(want)}"
    for k, t in want.items():
        if not isinstance(req[k], t) or isinstance(req[k], bool):
            return f"{req['op']}: `{k}` has the wrong type"
    if req["op"] == "hello" and req["protocol"] != 1:
        return "protocol must be 1"
    if req["op"] == "tasks" and req["split"] not in ("train", "test"):
        return "split must be train or test"
    return None


state = {}


def obs():
    c, n = state["task"].split("-")
    if state["key"] is None:
        return f"You are in vault {n}. You want the {c} gem. Keys hang on the wall."
    return f"You hold the {state['key']} key in vault {n}. You want the {c} gem. Chests stand here."


def actions():
    if state["key"] is None:
        return [f"take {c} key" for c in COLORS] + ["look", "wait"]
    return [f"open {c} chest" for c in COLORS] + ["look"]


for line in sys.stdin:
    if log:
        log.write(line)
        log.flush()
    try:
        req = json.loads(line)
    except ValueError:
        send({"error": "request is not JSON"})
        continue
    bad = check(req)
    if bad:
        send({"error": bad})
        continue
    op = req["op"]
    counts[op] = counts.get(op, 0) + 1
    if fault and op == at_op and counts[op] == at_n:
        if fault == "error":
            send({"error": f"scripted failure at {op} {at_n}"})
            continue
        if fault == "malformed":
            sys.stdout.write('{"observation": "half a\n')
            sys.stdout.flush()
            continue
        if fault == "not-object":
            send(["a", "list"])
            continue
        if fault == "missing-field":
            send({"observation": "no done field", "reward": 0})
            continue
        if fault == "crash":
            sys.exit(3)
        if fault == "hang":
            time.sleep(60)
        if fault == "long-line":
            sys.stdout.write('{"observation": "' + "x" * (17 << 20) + '"}\n')
            sys.stdout.flush()
            continue
    if op == "hello":
        send({"name": "vault", "protocol": 2 if fault == "bad-hello" else 1})
    elif op == "tasks":
        send({"tasks": TRAIN if req["split"] == "train" else TEST})
    elif op == "reset":
        if req["task"] not in ALL:
            send({"error": f"no task {req['task']}"})
            continue
        state = {"task": req["task"], "key": None, "done": False, "ok": False, "steps": []}
        c, n = req["task"].split("-")
        send({"goal": f"fetch the {c} gem from vault {n}", "category": None,
              "observation": obs(), "actions": actions()})
    elif op == "step":
        if not state or state["done"]:
            send({"error": "step outside an episode"})
            continue
        a = req["action"]
        c, n = state["task"].split("-")
        reward = 0.0
        state["steps"].append(a)
        if state["key"] is None and a == f"take {c} key":
            state["key"] = c
            reward = 0.5
            state["took"] = len(state["steps"])
        elif state["key"] == c and a == f"open {c} chest":
            state["done"] = state["ok"] = True
            reward = 0.5
        if state["done"]:
            send({"observation": f"You found the {c} gem.", "reward": reward,
                  "done": True, "success": True, "actions": []})
        else:
            send({"observation": obs(), "reward": reward, "done": False,
                  "success": None, "actions": actions()})
    elif op == "achieved":
        if "--no-achieved" in opt:
            send({"error": "unknown op achieved"})
            continue
        out = []
        if state and state.get("key") and not state["ok"]:
            k = state["took"]
            out.append({"goal": f"take the {state['key']} key", "steps": [k - 1, k]})
        send({"achieved": out})
    elif op == "close":
        break
