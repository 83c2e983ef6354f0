"""The eval/gen/* metrics from per-sample values: pure, so DDP workers add their sums and
every worker reports the same numbers.

Per sample i (a prompt x_i, the policy's completion y_i, the reference's completion r_i):
    length       = |y_i| tokens              eos_rate   = [y_i ended with EOS]
    kl           = log pi(y_i|x_i) - log pi_ref(y_i|x_i)   (the sequence log-ratio of the policy's own
                   sample: its mean over sampled y_i estimates KL(pi || pi_ref); DPO paper section 6.1)
    reward       = judge(x_i, y_i)           ref_reward = judge(x_i, r_i)
    win          = 1 if judge(x_i, y_i) > judge(x_i, r_i), 1/2 on a tie, else 0
length_ratio = sum |y_i| / sum |r_i|; the others are means over samples."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SUMMED = ("count", "length", "ref_length", "eos", "kl", "reward", "ref_reward", "win")


@dataclass
class Sample:
    length: int
    ref_length: int
    eos: bool
    logp: float
    ref_logp: float
    reward: float | None = None
    ref_reward: float | None = None

    @property
    def win(self) -> float | None:
        if self.reward is None or self.ref_reward is None:
            return None
        return 1.0 if self.reward > self.ref_reward else 0.5 if self.reward == self.ref_reward else 0.0


def sums(samples: Sequence[Sample], judged: bool) -> dict[str, float]:
    """What a worker contributes: sums over its samples (judge sums only with a judge; the same
    keys on every worker, even one with no prompts, since the workers add them key by key)."""
    out = {"count": float(len(samples)), "length": float(sum(s.length for s in samples)),
           "ref_length": float(sum(s.ref_length for s in samples)), "eos": float(sum(s.eos for s in samples)),
           "kl": sum(s.logp - s.ref_logp for s in samples)}
    if judged:
        out.update(reward=sum(s.reward for s in samples), ref_reward=sum(s.ref_reward for s in samples),
                   win=sum(s.win for s in samples))
    return out


def metrics(total: dict[str, float]) -> dict[str, float]:
    """eval/gen/* from sums added over every worker."""
    n = max(total["count"], 1.0)
    out = {"eval/gen/length": total["length"] / n, "eval/gen/eos_rate": total["eos"] / n, "eval/gen/kl": total["kl"] / n}
    if total["ref_length"]:  # a reference that answered nothing at all has no ratio
        out["eval/gen/length_ratio"] = total["length"] / total["ref_length"]
    if "reward" in total:
        out.update({"eval/gen/reward": total["reward"] / n, "eval/gen/ref_reward": total["ref_reward"] / n,
                    "eval/gen/win_rate": total["win"] / n})
    return out
