"""A sweep in a few lines of Markdown: how many trials ended how, and the top trials by the
sweep metric. The report's `report.md` and the exported model card both use these."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sweep.config.schema import PrefsweepConfig
from sweep.config.search import walk
from sweep.study.report_insights import finite, fmt, ranked

STATE_WORDS = {"finished": "finished", "stopped": "stopped early", "failed": "failed", "running": "running",
               "pending": "pending", "interrupted": "interrupted"}


def swept_keys(cfg: PrefsweepConfig) -> list[str]:
    """Config keys the sweep varies (nested ones too), in the order the config lists them."""
    return list(dict.fromkeys(s.key for s in walk(cfg.sweep.parameters) if s.spec.kind != "constant"))


def summary_sentence(cfg: PrefsweepConfig, trials: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    ended = ", ".join(f"{n} {STATE_WORDS.get(s, s)}" for s, n in counts.items())
    metrics = " and ".join(f"{m.name} ({m.goal})" for m in cfg.sweep.objectives)
    return (f"{len(trials)} trial{'s' if len(trials) != 1 else ''}{f' ({ended})' if ended else ''}; "
            f"search `{cfg.sweep.method}` over {len(swept_keys(cfg))} parameters; ranked by {metrics}.")



def top_table(cfg: PrefsweepConfig, trials: Sequence[dict[str, Any]], k: int = 10) -> list[str]:
    """Markdown rows of the best k trials by the sweep metric: each objective, then each swept
    parameter. `trials`: dicts with trial_id, state, params and metrics (a TrialRow's)."""
    metric, goal = cfg.sweep.metric.name, cfg.sweep.metric.goal
    scored = ranked([t for t in trials if finite(t["metrics"].get(metric)) is not None], goal,
                    lambda t: t["metrics"][metric])
    names = [m.name for m in cfg.sweep.objectives]
    if cfg.sweep.champion and cfg.sweep.champion.by and cfg.sweep.champion.by not in names:
        names.append(cfg.sweep.champion.by)
    params = [p for p in swept_keys(cfg) if any(p in t["params"] for t in scored)]
    header = ["rank", "trial", "state", *names, *params]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, t in enumerate(scored[:k], 1):
        cells = [str(rank), t["trial_id"], t["state"], *[fmt(t["metrics"].get(n, "")) for n in names],
                 *[fmt(t["params"].get(p, "")) for p in params]]
        lines.append("| " + " | ".join(cells) + " |")
    if not scored:
        lines.append("| " + " | ".join(["-", f"no trial reported {metric} yet"] + [""] * (len(header) - 2)) + " |")
    return lines
