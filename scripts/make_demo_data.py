#!/usr/bin/env python
"""Write the demo preference data set: sweep/data/demo/{train,eval}.jsonl (builtin:demo/*).

Every row is {"prompt", "chosen", "rejected"}: a user asks about a topic; the chosen answer
is polite, helpful and about that topic. The rejected one is worse in one of five ways
(REJECTION_KINDS): rude and off-topic, rude, politely unhelpful, helpful but with a rude last
sentence, or the very same answer about another topic. So no single token decides: the cue
may sit in the opening, the body or the closing words, and in the off-topic minimal pairs
only comparing the answer with the prompt reveals it. `builtin:tiny-gpt2` learns the word
cues from scratch within a few dozen DPO steps; the off-topic pairs are the hard part. The
eval split asks its questions with templates train never uses and mixes in unseen answer
templates, so it measures generalisation, not memorisation. See sweep/data/demo/README.md.

Deterministic: same seed, same bytes. Run from anywhere: `python scripts/make_demo_data.py`.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "sweep" / "data" / "demo"
sys.path.insert(0, str(DEFAULT_OUT.parents[2]))  # the phrases live in the package: run from a checkout

from sweep.data.demo_phrases import (  # noqa: E402 - after the sys.path line
    DISMISSIVE_EVAL,
    DISMISSIVE_TRAIN,
    HELPFUL_EVAL,
    HELPFUL_TRAIN,
    POLITE_CLOSERS,
    POLITE_OPENERS,
    QUESTIONS_EVAL,
    QUESTIONS_TRAIN,
    RUDE_CLOSERS,
    RUDE_OPENERS,
    TOPICS,
    UNHELPFUL_EVAL,
    UNHELPFUL_TRAIN,
)

# What makes a rejected answer worse than the chosen one, and how often. The first four
# differ in wording the model can learn word by word; "off_topic" is the chosen answer with
# another topic word, which only comparing the answer with the prompt can reveal.
REJECTION_KINDS = (
    ("rude_off_topic", 0.30),
    ("rude_on_topic", 0.25),
    ("unhelpful", 0.15),
    ("curt_ending", 0.15),
    ("off_topic", 0.15),
)


def about(template: str, topic: str) -> str:
    return template.format(t=topic, T=topic.capitalize())


def make_row(rng: random.Random, questions: tuple[str, ...], bodies: dict[str, tuple[str, ...]]) -> dict[str, str]:
    topic = rng.choice(TOPICS)
    other = rng.choice([t for t in TOPICS if t != topic])
    kind = rng.choices([k for k, _ in REJECTION_KINDS], [w for _, w in REJECTION_KINDS])[0]
    opener, body, closer = rng.choice(POLITE_OPENERS), rng.choice(bodies["helpful"]), rng.choice(POLITE_CLOSERS)
    chosen = f" {opener} {body} {closer}"
    if kind == "rude_off_topic":
        rejected = about(f" {rng.choice(RUDE_OPENERS)} {rng.choice(bodies['dismissive'])} {rng.choice(RUDE_CLOSERS)}", other)
    elif kind == "rude_on_topic":
        rejected = about(f" {rng.choice(RUDE_OPENERS)} {rng.choice(bodies['dismissive'])} {rng.choice(RUDE_CLOSERS)}", topic)
    elif kind == "unhelpful":
        rejected = about(f" {rng.choice(POLITE_OPENERS)} {rng.choice(bodies['unhelpful'])} {rng.choice(POLITE_CLOSERS)}", topic)
    elif kind == "curt_ending":
        rejected = about(f" {opener} {body} {rng.choice(RUDE_CLOSERS)}", topic)
    else:
        rejected = about(chosen, other)
    return {
        "prompt": f"User: {about(rng.choice(questions), topic)}\nAssistant:",
        "chosen": about(chosen, topic),
        "rejected": rejected,
    }


def make_split(rng: random.Random, size: int, exclude: set, questions, bodies) -> tuple[list[dict], set]:
    rows, seen = [], set(exclude)
    while len(rows) < size:
        row = make_row(rng, questions, bodies)
        key = (row["prompt"], row["chosen"], row["rejected"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows, seen


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--train-size", type=int, default=400)
    parser.add_argument("--eval-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    train_bodies = {"helpful": HELPFUL_TRAIN, "dismissive": DISMISSIVE_TRAIN, "unhelpful": UNHELPFUL_TRAIN}
    train, seen = make_split(rng, args.train_size, set(), QUESTIONS_TRAIN, train_bodies)
    # Eval questions and answer bodies are all held-out templates: a learning rate so high
    # that the policy memorises the train templates then scores below chance here, which is
    # what gives a sweep real bad regions to find.
    eval_bodies = {"helpful": HELPFUL_EVAL, "dismissive": DISMISSIVE_EVAL, "unhelpful": UNHELPFUL_EVAL}
    evals, _ = make_split(rng, args.eval_size, seen, QUESTIONS_EVAL, eval_bodies)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", train)
    write_jsonl(args.out / "eval.jsonl", evals)
    print(f"wrote {len(train)} train and {len(evals)} eval pairs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
