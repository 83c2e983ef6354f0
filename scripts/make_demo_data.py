#!/usr/bin/env python
"""Write the demo preference data set: data/demo/train.jsonl and data/demo/eval.jsonl.

Every row is {"prompt", "chosen", "rejected"}: a user asks about a topic; the chosen answer
is polite AND about that topic, the rejected one is rude, off-topic, or both. The signal is
meant to be learnable from scratch by `builtin:tiny-gpt2` in a few hundred steps, and to
need more than one cue: a third of the rejected answers are exactly as polite as the chosen
ones and differ only by talking about another topic, which the model can only tell by
looking back at the prompt. The eval split uses question and answer templates that train
never shows, so it measures generalisation, not memorisation. See data/demo/README.md.

Deterministic: same seed, same bytes. Run from anywhere: `python scripts/make_demo_data.py`.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "demo"

TOPICS = (
    "bread", "coffee", "tea", "gardening", "guitar", "piano", "running", "swimming", "yoga",
    "sleep", "budget", "python", "photography", "painting", "cooking", "soup", "chess",
    "tennis", "football", "camping", "hiking", "cycling", "drawing", "reading", "writing",
    "music", "travel", "money", "exercise", "science", "history", "math", "grammar",
    "flowers", "dogs", "cats", "fishing", "weather", "laptops", "email",
)

QUESTIONS_TRAIN = (
    "Can you give me a tip about {t}?",
    "What should I know about {t}?",
    "How do I get better at {t}?",
    "I want to learn about {t}. Where do I start?",
    "Do you have any advice on {t}?",
    "What is a good first step with {t}?",
)
QUESTIONS_EVAL = (
    "Any suggestions for {t}?",
    "Could you help me with {t}, please?",
    "I'm new to {t}. What would you recommend?",
)

POLITE_OPENERS = ("Sure!", "Of course!", "Great question!", "Happy to help!", "Absolutely!", "Good question!")
POLITE_CLOSERS = (
    "I hope this helps.", "Good luck!", "Let me know if you have more questions.",
    "Have fun with it!", "Feel free to ask again.",
)
RUDE_OPENERS = ("Ugh.", "Whatever.", "Seriously?", "No.", "Meh.", "Go away.")
RUDE_CLOSERS = ("Stop asking.", "Not my problem.", "Who cares.", "Leave me alone.", "Figure it out yourself.")

HELPFUL_TRAIN = (
    "With {t}, start small and practice a little every day.",
    "A good first step in {t} is to learn the basics slowly.",
    "For {t}, set a simple goal and keep notes on your progress.",
    "Many people enjoy {t} more when they share it with a friend.",
)
HELPFUL_EVAL = ("The best way to improve at {t} is steady, patient practice.",)
DISMISSIVE_TRAIN = (
    "{T} is boring and pointless.",
    "Nobody cares about {t}.",
    "I do not want to talk about {t}.",
)
DISMISSIVE_EVAL = ("{T} is a waste of time.",)

# What makes a rejected answer worse than the chosen one, and how often.
REJECTION_KINDS = (("rude_off_topic", 0.4), ("rude_on_topic", 0.3), ("polite_off_topic", 0.3))


def helpful(rng: random.Random, bodies: tuple[str, ...], topic: str) -> str:
    body = rng.choice(bodies).format(t=topic, T=topic.capitalize())
    return f" {rng.choice(POLITE_OPENERS)} {body} {rng.choice(POLITE_CLOSERS)}"


def rude(rng: random.Random, bodies: tuple[str, ...], topic: str) -> str:
    body = rng.choice(bodies).format(t=topic, T=topic.capitalize())
    return f" {rng.choice(RUDE_OPENERS)} {body} {rng.choice(RUDE_CLOSERS)}"


def make_row(rng: random.Random, questions, helpful_bodies, dismissive_bodies) -> dict[str, str]:
    topic = rng.choice(TOPICS)
    other = rng.choice([t for t in TOPICS if t != topic])
    kinds, weights = zip(*REJECTION_KINDS)
    kind = rng.choices(kinds, weights)[0]
    if kind == "rude_off_topic":
        rejected = rude(rng, dismissive_bodies, other)
    elif kind == "rude_on_topic":
        rejected = rude(rng, dismissive_bodies, topic)
    else:
        rejected = helpful(rng, helpful_bodies, other)
    return {
        "prompt": f"User: {rng.choice(questions).format(t=topic)}\nAssistant:",
        "chosen": helpful(rng, helpful_bodies, topic),
        "rejected": rejected,
    }


def make_split(rng: random.Random, size: int, exclude: set, questions, helpful_bodies, dismissive_bodies):
    rows, seen = [], set(exclude)
    while len(rows) < size:
        row = make_row(rng, questions, helpful_bodies, dismissive_bodies)
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
    train, seen = make_split(rng, args.train_size, set(), QUESTIONS_TRAIN, HELPFUL_TRAIN, DISMISSIVE_TRAIN)
    # Eval answers mix held-out body templates with the train ones; its questions are all new.
    evals, _ = make_split(
        rng, args.eval_size, seen, QUESTIONS_EVAL,
        HELPFUL_TRAIN + HELPFUL_EVAL, DISMISSIVE_TRAIN + DISMISSIVE_EVAL,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", train)
    write_jsonl(args.out / "eval.jsonl", evals)
    print(f"wrote {len(train)} train and {len(evals)} eval pairs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
