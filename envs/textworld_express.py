#!/usr/bin/env python3
"""TextWorldExpress over the trajdb environment protocol v1 (see the README).

    trajdb bootstrap --env-cmd "python3 envs/textworld_express.py --games twc" ...

Needs the `textworld-express` PyPI package and Java 17+. Task ids are GAME:SEED; the train
split lists the package's own training seeds and the test split its own test seeds, the
games interleaved (twc:0, cookingworld:0, coin:0, twc:1, ...). The goal is the game's task
description, the category the game name, the admissible actions its valid actions (sorted).

Options:
  --games twc,cookingworld,coin   which games (any TextWorldExpress game name)
  --params "numLocations=1,..."   the games' generation parameters (the package's syntax),
                                  the same for every game; default: each game's defaults
  --env-step-limit N              the game's own step limit (default 1000; trajdb's
                                  --max-steps ends episodes first)
Requests are logged to stderr with --verbose.
"""
import argparse
import json
import os
import sys

# This file's name is the package's: import the package, not this file.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _here]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--games", default="twc,cookingworld,coin")
    ap.add_argument("--params", default="")
    ap.add_argument("--env-step-limit", type=int, default=1000)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    games = [g for g in a.games.split(",") if g]

    def send(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        from textworld_express import TextWorldExpressEnv
        env = TextWorldExpressEnv(envStepLimit=a.env_step_limit)
    except Exception as e:  # the package or Java is missing: answer every request so
        env = None           # trajdb reports it as one clear error line
        startup_error = f"textworld-express is unusable: {type(e).__name__}: {e}"
    seeds = {}
    loaded = None
    done = True
    name = "textworld-express:" + "+".join(games) + (f"[{a.params}]" if a.params else "")

    def load(game):
        nonlocal loaded
        if loaded != game:
            env.load(gameName=game, gameParams=a.params)
            loaded = game

    def reply_step(obs, info):
        fin = bool(info.get("done") or info.get("tasksuccess") or info.get("taskfailure"))
        return {"observation": obs, "reward": float(info.get("reward") or 0.0), "done": fin,
                "success": bool(info.get("tasksuccess")) if fin else None,
                "actions": None if fin else sorted(info.get("validActions") or [])}

    for line in sys.stdin:
        if a.verbose:
            sys.stderr.write("twx< " + line)
        try:
            req = json.loads(line)
            op = req["op"]
        except (ValueError, KeyError, TypeError):
            send({"error": "request is not a JSON object with `op`"})
            continue
        if op == "close":
            break
        if env is None:
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
                per_game = []
                for g in games:
                    if (g, split) not in seeds:
                        load(g)
                        seeds[(g, split)] = list(env.getValidSeedsTrain() if split == "train"
                                                 else env.getValidSeedsTest())
                    per_game.append([f"{g}:{s}" for s in seeds[(g, split)]])
                tasks = [t for row in zip(*per_game) for t in row]
                send({"tasks": tasks})
            elif op == "reset":
                game, _, seed = req["task"].rpartition(":")
                if game not in games or not seed.isdigit():
                    send({"error": f"unknown task {req['task']}"})
                    continue
                load(game)
                seed = int(seed)
                fold = "train" if seed in set(env.getValidSeedsTrain()) else "test"
                obs, info = env.reset(seed=seed, gameFold=fold, generateGoldPath=False)
                done = False
                send({"goal": info.get("taskDescription", ""), "category": game,
                      "observation": obs, "actions": sorted(info.get("validActions") or [])})
            elif op == "step":
                if done:
                    send({"error": "step outside an episode"})
                    continue
                obs, _, _, info = env.step(req["action"])
                r = reply_step(obs, info)
                done = r["done"]
                send(r)
            elif op == "achieved":
                send({"achieved": []})
            else:
                send({"error": f"unknown op {op}"})
        except Exception as e:  # report, keep serving
            send({"error": f"{op}: {type(e).__name__}: {e}"})
    try:
        if env is not None:
            env.close()
    except Exception:
        pass


if __name__ == "__main__":
    main()
