"""`prefsweep validate`: config, data and tokenization checked without training."""
from __future__ import annotations

from statistics import mean
from typing import Any

from objectives.registry import resolve
from sweep.config.schema import PrefsweepConfig
from sweep.config.search import walk
from sweep.data.loading import load_preference_data
from sweep.data.tokenize import tokenize_completions, tokenize_pairs
from sweep.models.loading import load_tokenizer
from sweep.study.scoring import check_evaluation


def validate(cfg: PrefsweepConfig) -> dict[str, Any]:
    objectives = [resolve(name) for name in cfg.objectives_in_play()]
    paired = any(o.paired for o in objectives)
    data = load_preference_data(cfg.data, paired=paired, seed=cfg.train.seed)
    check_evaluation(cfg, data)
    tokenizer = load_tokenizer(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code)
    limits = dict(max_length=cfg.data.max_length, max_prompt_length=cfg.data.max_prompt_length)
    if data.paired:
        rows = tokenize_pairs(data.train[:2000], tokenizer, **limits)
        lengths = [len(r.prompt_ids) + max(len(r.chosen_ids), len(r.rejected_ids)) for r in rows]
    else:
        rows = tokenize_completions(data.train[:2000], tokenizer, **limits)
        lengths = [len(r.prompt_ids) + len(r.completion_ids) for r in rows]
    report: dict[str, Any] = {
        "study": cfg.name,
        "objective(s)": ", ".join(o.name for o in objectives),
        "model": cfg.model.name_or_path,
        **data.summary(),
        "tokens per row (first 2000: mean / max)": f"{mean(lengths):.1f} / {max(lengths)}",
        "rows at max_length": sum(n >= cfg.data.max_length for n in lengths),
        "swept parameters": [swept.describe() for swept in walk(cfg.sweep.parameters)],
        "paths resolved beside the config file": cfg._resolved_paths or "none",
        "sweep": f"{cfg.sweep.method}, {cfg.sweep.num_trials} trials, "
                 + ", ".join(f"{m.name} ({m.goal})" for m in cfg.sweep.objectives),
        "evaluation": _describe_evaluation(cfg),
    }
    return report


def _describe_evaluation(cfg: PrefsweepConfig) -> str:
    e = cfg.evaluation
    if e is None:
        return "none (no eval/gen/* metrics)"
    how = "greedy" if e.greedy else f"sampled at temperature {e.temperature:g}, top_p {e.top_p:g}"
    return (f"{e.prompts} eval prompts, up to {e.max_new_tokens} new tokens, {how}, at "
            f"{'every evaluation' if e.every == 'eval' else 'the final evaluation'}; judge {e.judge_label() or 'none'}")
