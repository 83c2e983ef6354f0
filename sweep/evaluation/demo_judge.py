"""`judge: builtin:demo`: the gold judge of the demo data, the demo's analogue of the DPO paper's
sentiment classifier. It scores any free text by the rules that decided the demo's preferences
(sweep.data.demo_phrases): a polite opening, a polite closing, on the prompt's topic (and no
other), and no rude or evasive phrase. Score = the share of the four rules met, in [0, 1]."""
from __future__ import annotations

import re

from sweep.data.demo_phrases import (
    DISMISSIVE_EVAL,
    DISMISSIVE_TRAIN,
    POLITE_CLOSERS,
    POLITE_OPENERS,
    RUDE_CLOSERS,
    RUDE_OPENERS,
    TOPICS,
    UNHELPFUL_EVAL,
    UNHELPFUL_TRAIN,
)

_WORD = re.compile(r"[A-Za-z']+")
_TOPICS = frozenset(TOPICS)


def _template_pattern(template: str) -> re.Pattern:
    # "{T} is boring and pointless." -> any topic word in the slot, the rest verbatim.
    parts = re.split(r"\{[tT]\}", template)
    return re.compile(r"\w+".join(re.escape(p) for p in parts), re.IGNORECASE)


_BAD = tuple(_template_pattern(t) for t in (*DISMISSIVE_TRAIN, *DISMISSIVE_EVAL, *UNHELPFUL_TRAIN, *UNHELPFUL_EVAL))
_RUDE = tuple(p.lower() for p in (*RUDE_OPENERS, *RUDE_CLOSERS))


def prompt_topic(prompt: str) -> str | None:
    """The demo topic the prompt asks about (the last topic word in it), if any."""
    found = [w.lower() for w in _WORD.findall(prompt) if w.lower() in _TOPICS]
    return found[-1] if found else None


def rules(prompt: str, completion: str) -> dict[str, bool]:
    text = completion.strip()
    lower = text.lower()
    topic = prompt_topic(prompt)
    mentioned = {w.lower() for w in _WORD.findall(text)} & _TOPICS
    return {
        "polite_opening": text.startswith(POLITE_OPENERS),
        "polite_closing": text.endswith(POLITE_CLOSERS),
        "on_topic": topic is not None and mentioned == {topic},
        "not_rude_or_evasive": not any(r in lower for r in _RUDE) and not any(p.search(text) for p in _BAD),
    }


class DemoJudge:
    name = "builtin:demo"

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        return [sum(rules(p, c).values()) / 4.0 for p, c in zip(prompts, completions, strict=True)]
