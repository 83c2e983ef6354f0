"""Under DDP each worker completes its share of the prompts and the sums are added: two gloo
workers report exactly what one worker does (greedy decoding, so the samples do not depend on
how the prompts were batched), and rank 0 gets every row of the table."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_generation_eval import SFT, config, demo_rows

from sweep.evaluation.scorer import ScorerClient
from sweep.evaluation.worker import GenerationEval
from sweep.models.loading import load_causal_lm, load_tokenizer
from sweep.study.ray_cluster import free_port


def _evaluate(rank: int, world: int, port: int, out):
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = config(temperature=0.0, prompts=10, max_new_tokens=12, batch_size=3)
        tokenizer = load_tokenizer(SFT)
        scorer = ScorerClient(cfg.model_dump(mode="json"), None)
        policy = load_causal_lm(SFT)
        with torch.no_grad():  # a policy a little away from its reference
            for p in policy.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.02)
        metrics, rows = GenerationEval(cfg, demo_rows(), tokenizer, scorer, rank, world).run(policy, "cpu")
        out.put((rank, metrics, rows))
    finally:
        if world > 1:
            dist.destroy_process_group()


def _run(world: int) -> list:
    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_evaluate, args=(rank, world, port, out)) for rank in range(world)]
    for p in procs:
        p.start()
    results = sorted((out.get(timeout=300) for _ in procs), key=lambda r: r[0])
    for p in procs:
        p.join(timeout=60)
    return results


@pytest.mark.timeout(600)
def test_two_workers_report_what_one_does():
    ((_, alone, rows),) = _run(1)
    (_, first, gathered), (_, second, _) = _run(2)
    assert first == second  # every rank reports the same numbers
    for key, value in alone.items():
        assert first[key] == pytest.approx(value, abs=1e-4), key
    assert [r["index"] for r in gathered] == list(range(10))
    assert [r["completion"] for r in gathered] == [r["completion"] for r in rows]
