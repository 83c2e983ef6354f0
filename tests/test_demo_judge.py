"""`judge: builtin:demo` knows the preference that generated the demo data."""
from __future__ import annotations

import json
from pathlib import Path

from sweep.evaluation.demo_judge import DemoJudge, prompt_topic, rules

DEMO = Path(__file__).resolve().parents[1] / "sweep" / "data" / "demo"


def test_it_prefers_what_the_data_prefers_on_every_row():
    judge = DemoJudge()
    for split in ("train", "eval"):
        rows = [json.loads(line) for line in (DEMO / f"{split}.jsonl").read_text().splitlines()]
        prompts = [r["prompt"] for r in rows]
        chosen = judge.score(prompts, [r["chosen"] for r in rows])
        rejected = judge.score(prompts, [r["rejected"] for r in rows])
        assert all(c == 1.0 for c in chosen), split
        assert all(c > r for c, r in zip(chosen, rejected)), split
        assert 0.2 < sum(rejected) / len(rejected) < 0.6  # rejected answers break some rules, not all


def test_each_rule_on_free_text():
    prompt = "User: Could you help me with painting, please?\nAssistant:"
    assert prompt_topic(prompt) == "painting"
    good = rules(prompt, " Happy to help! Painting takes practice. Good luck!")
    assert all(good.values()), good
    assert not rules(prompt, "Painting takes practice. Good luck!")["polite_opening"]
    assert not rules(prompt, "Happy to help! Coffee takes practice. Good luck!")["on_topic"]
    assert DemoJudge().score([prompt], [""]) == [0.25]  # an empty answer is only "not rude"
