#!/usr/bin/env python3
"""ScienceWorld over the trajdb environment protocol v1 (see the README).

    trajdb bootstrap --env-cmd "python3 envs/scienceworld.py --tasks find-plant,melt,boil" ...

Needs the `scienceworld` PyPI package and Java. Task ids are TASK:VARIATION; the train split
lists each task type's own training variations and the test split its own test variations,
the task types interleaved. The goal is the task description, the category the task type,
the admissible actions the game's valid actions (sorted). Success: the episode ended with a
score of 100.

Options:
  --tasks a,b,c          task types (default: find-living-thing,find-non-living-thing,find-plant)
  --simplifications S    the package's simplification string (default: easy)
  --env-step-limit N     the game's own step limit (default 1000; trajdb's --max-steps ends
                         episodes first)
"""
import argparse
import json
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="find-living-thing,find-non-living-thing,find-plant")
    ap.add_argument("--simplifications", default="easy")
    ap.add_argument("--env-step-limit", type=int, default=1000)
    a = ap.parse_args()
    types = [t for t in a.tasks.split(",") if t]

    def send(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    startup_error = None
    try:
        from scienceworld import ScienceWorldEnv
        env = ScienceWorldEnv("", envStepLimit=a.env_step_limit)
        unknown = [t for t in types if t not in env.get_task_names()]
        if unknown:
            startup_error = f"unknown task types {unknown}; known: {env.get_task_names()}"
    except Exception as e:
        env = None
        startup_error = f"scienceworld is unusable: {type(e).__name__}: {e}"
    variations = {}
    done = True
    name = "scienceworld:" + "+".join(types) + f"[{a.simplifications}]"

    for line in sys.stdin:
        try:
            req = json.loads(line)
            op = req["op"]
        except (ValueError, KeyError, TypeError):
            send({"error": "request is not a JSON object with `op`"})
            continue
        if op == "close":
            break
        if startup_error:
            send({"error": startup_error})
            continue
        try:
            if op == "hello":
                send({"name": name, "protocol": 1})
            elif op == "tasks":
                split = req["split"]
                if split not in ("train", "test"):
                    send({"error": f"unknown split {split}"})
                    continue
                rows = []
                for t in types:
                    if (t, split) not in variations:
                        env.load(t, 0, a.simplifications)
                        variations[(t, split)] = list(
                            env.get_variations_train() if split == "train"
                            else env.get_variations_test())
                    rows.append([f"{t}:{v}" for v in variations[(t, split)]])
                # Interleave task types; longer lists continue after shorter ones end.
                out = []
                for i in range(max(len(r) for r in rows)):
                    out.extend(r[i] for r in rows if i < len(r))
                send({"tasks": out})
            elif op == "reset":
                t, _, v = req["task"].rpartition(":")
                if t not in types or not v.isdigit():
                    send({"error": f"unknown task {req['task']}"})
                    continue
                env.load(t, int(v), a.simplifications)
                obs, info = env.reset()
                done = False
                send({"goal": env.get_task_description(), "category": t,
                      "observation": obs, "actions": sorted(info.get("valid") or [])})
            elif op == "step":
                if done:
                    send({"error": "step outside an episode"})
                    continue
                obs, reward, finished, info = env.step(req["action"])
                score = info.get("score", 0)
                done = bool(finished) or score >= 100 or score < 0
                send({"observation": obs, "reward": float(reward), "done": done,
                      "success": (score >= 100) if done else None,
                      "actions": None if done else sorted(info.get("valid") or [])})
            elif op == "achieved":
                send({"achieved": []})
            else:
                send({"error": f"unknown op {op}"})
        except Exception as e:
            send({"error": f"{op}: {type(e).__name__}: {e}"})
    try:
        if env is not None:
            env.close()
    except Exception:
        pass


if __name__ == "__main__":
    main()
