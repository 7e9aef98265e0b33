"""A short ReAct agent in Python that learns from its own successes through trajdb.

Each episode: retrieve successful examples by goal and plan (stage "plan"); then per step
retrieve by goal + current observation and think (stage "reason"), retrieve by goal +
thought and act (stage "act"). Every retrieval is logged to the episode, the outcome sets
the examples' usage counters (Q), and the finished trajectory is stored for later episodes.

The model is any OpenAI-compatible server through the `openai` package:

    OPENAI_BASE_URL=http://localhost:8000/v1 OPENAI_API_KEY=x \\
        python examples/python/react_agent.py --db /tmp/agentdb --model MODEL [--embed-model E]

With --embed-model the key spaces embed text through the server's /embeddings endpoint (a
Python callable given to trajdb); without it they use trajdb's built-in hash embedder.
The environment is a toy kitchen: make a dish by doing its three actions in order.
"""

import argparse
import os
import random

import numpy as np
from openai import OpenAI

import trajdb

RECIPES = {
    "make tea": ["boil water", "add tea leaves", "pour into cup"],
    "make toast": ["slice bread", "toast bread", "butter toast"],
    "make salad": ["wash lettuce", "chop tomato", "add dressing"],
}


class Kitchen:
    """Goal: do the dish's actions in order. Options are every action, shuffled."""

    def __init__(self, goal, seed):
        self.goal, self.done, self.rng = goal, [], random.Random(seed)

    def observation(self):
        options = [a for r in RECIPES.values() for a in r]
        self.rng.shuffle(options)
        done = ", ".join(self.done) or "nothing"
        return f"Done so far: {done}. Options: {' | '.join(options)}"

    def step(self, action):
        """Returns (observation, finished, success)."""
        want = RECIPES[self.goal][len(self.done)]
        if action.strip() != want:
            return f"'{action}' did not help. The dish is ruined.", True, False
        self.done.append(want)
        if len(self.done) == len(RECIPES[self.goal]):
            return "The dish is ready.", True, True
        return self.observation(), False, False


def show(examples):
    """The retrieved examples as prompt text."""
    lines = []
    for ex in examples:
        t = ex.trajectory
        lines.append(f"Goal: {t['goal']}\nPlan: {t['plan']}")
        for s in t["steps"]:
            lines.append(f"Observation: {s['observation']}\nThought: {s['reasoning']}\nAction: {s['action']}")
    return "\n".join(lines) or "(none yet)"


class Agent:
    def __init__(self, db, client, model):
        self.db, self.client, self.model = db, client, model

    def llm(self, instruction, examples, context):
        prompt = f"{instruction}\n\nExamples:\n{show(examples)}\n\nNow:\n{context}"
        r = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0.0)
        return (r.choices[0].message.content or "").strip()

    def episode(self, goal, seed, k=2, window=1, max_steps=5):
        env = Kitchen(goal, seed)
        obs, steps, success = env.observation(), [], False
        with self.db.episode() as ep:
            ex = self.db.retrieve({"goal": goal}, k=k)
            ep.log(ex, stage="plan")
            plan = self.llm("Write a one-line plan.", ex, f"Goal: {goal}")
            for _ in range(max_steps):
                ex = self.db.retrieve({"goal": goal}, ("observation", obs), k=k, window=window)
                ep.log(ex, stage="reason")
                thought = self.llm("Think in one line about the next action.", ex,
                                   f"Goal: {goal}\nPlan: {plan}\nObservation: {obs}")
                ex = self.db.retrieve({"goal": goal}, ("reasoning", thought), k=k, window=window)
                ep.log(ex, stage="act")
                action = self.llm("Reply with exactly one of the options.", ex,
                                  f"Goal: {goal}\nObservation: {obs}\nThought: {thought}")
                steps.append({"observation": obs, "reasoning": thought, "action": action})
                obs, finished, success = env.step(action)
                if finished:
                    break
            ep.outcome = success
        self.db.append({"env": "kitchen", "task": goal, "goal": goal, "plan": plan, "steps": steps,
                        "final_observation": obs, "outcome": {"success": success}})
        return success


def server_embedder(client, model):
    """A trajdb embedder callable: list[str] -> float32 array (n, dims), via /embeddings."""
    def embed(texts):
        r = client.embeddings.create(model=model, input=texts)
        return np.array([d.embedding for d in r.data], dtype=np.float32)
    embed.name, embed.version = f"openai:{model}", "1"
    return embed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True)
    p.add_argument("--model", default=os.environ.get("OPENAI_MODEL", "local"))
    p.add_argument("--embed-model", default=os.environ.get("OPENAI_EMBED_MODEL"))
    p.add_argument("--episodes", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    client = OpenAI(base_url=os.environ.get("OPENAI_BASE_URL"),
                    api_key=os.environ.get("OPENAI_API_KEY", "none"))
    if a.embed_model:
        embedder = server_embedder(client, a.embed_model)
        dims = len(embedder(["probe"])[0])
    else:
        embedder, dims = "hash", 256
    rng = random.Random(a.seed)
    with trajdb.open(a.db) as db:
        db.create_space("goal", dims=dims, embedder=embedder)
        for field in ("observation", "reasoning"):
            db.create_space(field, level="step", dims=dims, embedder=embedder)
        agent = Agent(db, client, a.model)
        wins = [agent.episode(rng.choice(list(RECIPES)), seed=rng.randrange(1 << 30))
                for _ in range(a.episodes)]
        half = len(wins) // 2
        print(f"episodes {len(wins)}: success first half {sum(wins[:half])}/{half}, "
              f"second half {sum(wins[half:])}/{len(wins) - half}")
        best = sorted(db.utilities().items(), key=lambda kv: (-(kv[1].q or 0), kv[0]))[:3]
        for tid, u in best:
            print(f"trajectory {tid}: retrieved {u.retrievals} times in {u.episodes} episodes, Q = {u.q}")
        print(f"stored {len(db)} trajectories, {db.stats()['successes']} successes")
    return wins


if __name__ == "__main__":
    main()
