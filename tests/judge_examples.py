"""User judges for `judge: {python: judge_examples:NAME}` in tests (importable: pytest puts
tests/ on sys.path, and the Ray tier passes it on as PYTHONPATH)."""
from __future__ import annotations


def length_bonus(prompts, completions):
    """A well-behaved judge: longer answers score higher."""
    return [min(len(c.split()), 10) / 10 for c in completions]


def broken(prompts, completions):
    raise KeyError("no score for you")


def too_few(prompts, completions):
    return [0.0] * (len(completions) - 1)


def not_finite(prompts, completions):
    return [float("nan")] * len(completions)


not_callable = 3
