"""One trial's generation-based evaluation, as its training workers run it: complete this
worker's share of the study's eval prompts, have the study's scorer score them against the
reference, and add every worker's sums into the same eval/gen/* metrics."""
from __future__ import annotations

from typing import Any

import torch

from sweep.config.schema import PrefsweepConfig
from sweep.evaluation import metrics as gen_metrics
from sweep.evaluation.generation import completion_logps, eval_prompts, generate, prompt_set
from sweep.evaluation.scorer import ScorerClient


class GenerationEval:
    def __init__(self, cfg: PrefsweepConfig, eval_rows: list, tokenizer, scorer: ScorerClient, rank: int, world: int):
        self.cfg, self.ecfg = cfg, cfg.evaluation
        self.tokenizer, self.scorer = tokenizer, scorer
        self.rank, self.world = rank, world
        self.prompts = prompt_set(eval_prompts(eval_rows, self.ecfg.prompts, self.ecfg.seed), tokenizer,
                                  cfg.data.max_prompt_length)
        if not self.prompts.ids:
            raise ValueError("evaluation: the eval split has no prompts to complete")
        self.indices, self.mine = self.prompts.shard(rank, world)

    def due(self, step: int) -> bool:
        return self.ecfg.every == "eval" or step >= self.cfg.train.max_steps

    def run(self, policy, device) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """-> (eval/gen/* metrics, the same on every worker; this worker's table rows)."""
        reference = self.scorer.reference(self.prompts.ids, self.prompts.texts)
        ids = generate(policy, self.tokenizer, self.mine.ids, self.ecfg, device, seed_offset=self.rank) \
            if self.mine.ids else []
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        logps = completion_logps(policy, self.mine.ids, ids, self.tokenizer.pad_token_id, device,
                                 batch_size=self.ecfg.batch_size) if ids else []
        ref_logps, scores = self.scorer.score(self.mine.ids, self.mine.texts, ids, texts) if ids else ([], None)
        eos = self.tokenizer.eos_token_id
        samples, rows = [], []
        for n, i in enumerate(self.indices):
            ref_score = reference.scores[i] if reference.scores is not None else None
            sample = gen_metrics.Sample(
                length=len(ids[n]), ref_length=len(reference.completion_ids[i]), eos=bool(ids[n]) and ids[n][-1] == eos,
                logp=logps[n], ref_logp=ref_logps[n], reward=scores[n] if scores is not None else None,
                ref_reward=ref_score)
            samples.append(sample)
            rows.append({"index": i, "prompt": self.prompts.texts[i], "completion": texts[n],
                         "score": sample.reward, "reference": reference.texts[i], "reference_score": ref_score,
                         "log_ratio": sample.logp - sample.ref_logp})
        return gen_metrics.metrics(_added(gen_metrics.sums(samples, judged=self.ecfg.judge is not None), device)), _gathered(rows)


def _added(sums: dict[str, float], device) -> dict[str, float]:
    """Every worker's sums added (all of them take part, so each reports the same metrics)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return sums
    keys = [k for k in gen_metrics.SUMMED if k in sums]
    t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def _gathered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return rows
    everyone: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, rows)
    return sorted((r for part in everyone for r in part), key=lambda r: r["index"])


def table(rows: list[dict[str, Any]], step: int) -> dict[str, list]:
    """The rows as the columns MLflow's log_table takes, each with the evaluation's step."""
    columns = ["step", "index", "prompt", "completion", "score", "reference", "reference_score", "log_ratio"]
    return {c: [step if c == "step" else r[c] for r in rows] for c in columns}
