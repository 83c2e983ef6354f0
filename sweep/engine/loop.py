"""The per-worker training loop that Ray Train runs on each DDP worker.

The sweep driver never reaches in here: it hands over a config dict, the loaded data and
where to log; this loop reports metrics and HF-layout checkpoints through `ray.train.report`.
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from torch.utils.data import DataLoader

from objectives.registry import MISMATCHED_KL, objective_of
from sweep import tracking
from sweep.config.schema import PrefsweepConfig
from sweep.engine import moving_reference, reference_check, startup
from sweep.engine.batch_loss import batch_loss
from sweep.engine.checkpoints import checkpoint_metrics, load_training_state, save_checkpoint
from sweep.engine.collate import CompletionCollator, PairCollator
from sweep.engine.metrics import MetricAccumulator
from sweep.engine.policy import build_policy_and_reference, unwrap
from sweep.engine.precision import autocast_context
from sweep.engine.reference import Reference, cached_splits
from sweep.engine.rows import eval_rows, make_loader, worker_rows
from sweep.evaluation.judges import JudgeError
from sweep.evaluation.scorer import ScorerClient
from sweep.evaluation.worker import GenerationEval, table
from sweep.models.loading import load_tokenizer
from sweep.storage.files import join, read_text, write_text


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf: the run stops, since more steps cannot repair it."""


# A failure that a retry would repeat (a diverged loss, a judge that raises): Ray Train restarts
# a failed run from its last checkpoint, after a model load and the steps since, only to fail
# again; so a run that failed this way once ends at the start of every later attempt.
DIVERGED_FILE = "diverged.txt"


class RepeatedFailure(RuntimeError):
    """An earlier attempt of this run failed in a way a retry repeats."""


def refuse_if_diverged_before(run_dir: str | None) -> None:
    earlier = read_text(join(run_dir, DIVERGED_FILE)) if run_dir else None
    if earlier:
        raise RepeatedFailure(f"{earlier} (recorded by an earlier attempt; not retried)")


def fail_for_good(run_dir: str | None, message: str) -> None:
    if run_dir:
        write_text(join(run_dir, DIVERGED_FILE), message)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_lambda(cfg: PrefsweepConfig):
    warmup, total = cfg.train.warmup_steps, cfg.train.max_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _epochs(loader: DataLoader, start_epoch: int):
    epoch = start_epoch
    while True:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def evaluate(policy, reference, loader, objective, params, cfg, device) -> dict[str, float]:
    acc = MetricAccumulator()
    policy.eval()
    with torch.no_grad(), autocast_context(cfg, device):
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            out = batch_loss(policy, reference, batch, objective, params)
            acc.add({"loss": out.loss, **out.metrics}, weight=len(batch["index"]))
    policy.train()
    return {f"eval/{k}": v for k, v in acc.reduce(distributed=True).items()}


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    startup.begin()
    cfg = PrefsweepConfig.model_validate(loop_config["config"])
    refuse_if_diverged_before(loop_config.get("run_dir"))
    quiet_progress_bars()
    context = ray.train.get_context()
    rank = context.get_world_rank()
    seed_everything(cfg.train.seed + rank)
    device = ray.train.torch.get_device()

    objective = objective_of(cfg.objective)
    tokenizer = load_tokenizer(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code)
    train_items, eval_items = worker_rows(loop_config, cfg, objective.paired, tokenizer)
    startup.mark("rows")
    pad_id = tokenizer.pad_token_id
    collate = PairCollator(pad_id) if objective.paired else CompletionCollator(
        pad_id, mismatched=MISMATCHED_KL in objective.inputs(cfg.objective)
    )
    checkpoint = ray.train.get_checkpoint()
    ref_train, ref_eval = cached_splits(loop_config.get("ref_cache"), len(train_items), len(eval_items), device)
    policy, reference = build_policy_and_reference(cfg, objective, device, checkpoint, cached_ref=ref_train)
    startup.mark("model")
    eval_reference = reference
    if reference is not None and reference.cached is not None:  # eval rows are indexed into the eval cache
        eval_reference = Reference(model=reference.model, adapter_host=reference.adapter_host, cached=ref_eval)
    policy = ray.train.torch.prepare_model(policy)
    shards = dict(num_replicas=context.get_world_size(), rank=rank)
    train_loader = ray.train.torch.prepare_data_loader(
        make_loader(train_items, cfg, collate, batch_size=cfg.train.per_device_batch_size, shuffle=True, **shards)
    )
    eval_loader = ray.train.torch.prepare_data_loader(
        make_loader(eval_items, cfg, collate, batch_size=cfg.train.eval_batch_size or cfg.train.per_device_batch_size,
                    shuffle=False, **shards)
    ) if eval_items else None

    gen_eval = None
    if cfg.evaluation is not None:  # the study's scorer (an actor) holds the reference model and the judge
        scorer = ScorerClient(loop_config["config"], loop_config.get("scorer"))
        gen_eval = GenerationEval(cfg, eval_rows(loop_config), tokenizer, scorer, rank, context.get_world_size())

    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    start_step, saved_state = load_training_state(checkpoint, optimizer, scheduler) if checkpoint else (0, {})
    # objective hook: a reference that moves during training (TR-DPO sync, PMPO's EMA), restored on resume
    moving = moving_reference.attach(objective, cfg.objective, policy, reference,
                                     saved_state.get(moving_reference.STATE_KEY), resuming=checkpoint is not None)
    check_first = reference_check.applies(cfg, resuming=checkpoint is not None)
    if start_step and rank == 0:
        _say(f"[prefsweep {cfg.name}] resumed from the checkpoint of step {start_step}")
    if start_step >= cfg.train.max_steps:
        # The run had saved its last checkpoint when it was cut off, perhaps before its report
        # reached Tune: report that checkpoint's metrics again, so the trial ends finished.
        metrics = {**checkpoint_metrics(checkpoint), "resumed_from_step": start_step}
        ray.train.report(metrics, checkpoint=checkpoint if rank == 0 else None)
        return

    logger = None
    if rank == 0 and loop_config.get("mlflow_run_id"):
        logger = tracking.StepLogger(loop_config["tracking_uri"], loop_config["mlflow_run_id"])
        record_node(logger)

    accum = cfg.train.gradient_accumulation_steps
    batches = _epochs(train_loader, start_epoch=(start_step * accum) // max(1, len(train_loader)))
    for _ in range((start_step * accum) % max(1, len(train_loader))):
        next(batches)  # resume mid-epoch where the checkpoint left off

    window = MetricAccumulator()
    window_tokens, window_padded, window_start = 0, 0, time.perf_counter()
    last_train: dict[str, float] = {}
    reported = False
    policy.train()
    startup.mark("first_step")
    for step in range(start_step, cfg.train.max_steps):
        for micro in range(accum):
            batch = {k: v.to(device) for k, v in next(batches).items()}
            if check_first:  # objective hook: the step-0 check (loss at the reference) on the first batch
                reference_check.check_first_batch(policy, reference, batch, objective, cfg, device)
                check_first = False
            sync = micro == accum - 1 or not hasattr(policy, "no_sync")
            with (contextlib.nullcontext() if sync else policy.no_sync()), autocast_context(cfg, device):
                out = batch_loss(policy, reference, batch, objective, cfg.objective)
                loss = out.loss
                if not torch.isfinite(loss):
                    message = (f"loss is {loss.item()} at step {step + 1} (objective {cfg.objective.label}, "
                               f"learning_rate {cfg.train.learning_rate}, beta {cfg.objective.beta}); "
                               "stopping this run")
                    fail_for_good(loop_config.get("run_dir"), message)
                    raise NonFiniteLossError(message)
                (loss / accum).backward()
            window.add({"loss": loss.detach(), **out.metrics}, weight=len(batch["index"]))
            window_tokens += int(batch["attention_mask"].sum())
            window_padded += batch["attention_mask"].numel()
        if cfg.train.max_grad_norm is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.train.max_grad_norm)
            window.add({"grad_norm": grad_norm.detach()}, weight=1)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        done = step + 1
        if moving is not None:  # objective hook: TR-DPO sync / EMA after the optimizer step, as TRL's on_step_end
            moving.after_step(done)
        if done % cfg.train.logging_steps == 0 or done % cfg.train.eval_every == 0 or done == cfg.train.max_steps:
            elapsed = time.perf_counter() - window_start
            last_train = window.reduce(distributed=True)
            last_train["tokens_per_second"] = _all_sum(window_tokens) / max(elapsed, 1e-9)
            last_train["pad_share"] = 1.0 - _all_sum(window_tokens) / max(1, _all_sum(window_padded))
            last_train["learning_rate"] = scheduler.get_last_lr()[0]
            if logger:
                logger.log(last_train, step=done)
            if rank == 0:
                _say(progress_line(cfg, done, last_train))
            window = MetricAccumulator()
            window_tokens, window_padded, window_start = 0, 0, time.perf_counter()
        if done % cfg.train.eval_every == 0 or done == cfg.train.max_steps:
            metrics = dict(last_train)
            if eval_loader is not None:
                metrics.update(evaluate(policy, eval_reference, eval_loader, objective, cfg.objective, cfg, device))
            if gen_eval is not None and gen_eval.due(done):
                metrics.update(evaluate_generations(gen_eval, policy, cfg, device, logger, done, loop_config.get("run_dir")))
            metrics["step"] = done
            metrics["epoch"] = done * accum / max(1, len(train_loader))
            if logger:
                logger.log({k: v for k, v in metrics.items() if k.startswith("eval/")}, step=done)
            if rank == 0:
                _say(progress_line(cfg, done, {k: v for k, v in metrics.items() if k.startswith("eval/")}))
            if start_step and not reported:  # the driver says so on the console (sweep.study.console)
                metrics["resumed_from_step"] = start_step
            reported = True
            _report(metrics, policy, tokenizer, optimizer, scheduler, cfg, rank, done, moving)
    startup.mark("end")
    if logger:
        logger.client.set_tag(logger.run_id, tracking.STARTUP_TAG, startup.as_tag())


def evaluate_generations(gen_eval: GenerationEval, policy, cfg, device, logger, step: int,
                         run_dir: str | None) -> dict[str, float]:
    """eval/gen/* of this step; rank 0 logs the generations as the run's MLflow table."""
    try:
        with autocast_context(cfg, device):
            metrics, rows = gen_eval.run(unwrap(policy), device)
    except JudgeError as exc:
        fail_for_good(run_dir, str(exc))  # the judge would fail the same way on every retry
        raise
    if logger:
        logger.log_table(table(rows, step), tracking.GENERATIONS_TABLE)
    return metrics


def record_node(logger) -> None:
    """Tag the run with the Ray node rank 0 runs on; `prefsweep.nodes` lists the node of every
    attempt in order, so a trial restarted elsewhere after a node loss shows both."""
    node = ray.get_runtime_context().get_node_id()
    earlier = logger.client.get_run(logger.run_id).data.tags.get(tracking.NODES_TAG, "")
    logger.client.set_tag(logger.run_id, tracking.NODE_TAG, node)
    logger.client.set_tag(logger.run_id, tracking.NODES_TAG, ",".join([n for n in earlier.split(",") if n] + [node]))


def _report(metrics, policy, tokenizer, optimizer, scheduler, cfg, rank, step, moving=None) -> None:
    metrics = {k: (float(v) if isinstance(v, (int, float)) and math.isfinite(v) else v) for k, v in metrics.items()}
    with tempfile.TemporaryDirectory(prefix="prefsweep-ckpt-") as tmp:
        checkpoint = None
        if rank == 0:
            extra = {moving_reference.STATE_KEY: moving.state()} if moving is not None else None
            save_checkpoint(Path(tmp), unwrap(policy), tokenizer, optimizer, scheduler, cfg, step, metrics, extra)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def quiet_progress_bars() -> None:
    """No "Loading weights" / "Writing model shards" bars per load and checkpoint: a worker's
    console is a log, and a bar per step of every trial drowns the lines that matter."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _say(line: str) -> None:
    # Not print(): Ray Train patches print into its logger, which also echoes to stdout,
    # so every line would reach the console twice.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def progress_line(cfg: PrefsweepConfig, step: int, metrics: dict[str, float]) -> str:
    shown = [k for k in ("loss", "rewards/accuracies", "rewards/margins", "kl", "tokens_per_second",
                         "eval/loss", "eval/rewards/accuracies", "eval/rewards/margins", "eval/kl",
                         "eval/gen/win_rate", "eval/gen/kl", "eval/gen/length") if k in metrics]
    values = " ".join(f"{k}={metrics[k]:.4g}" for k in shown)
    return f"[prefsweep {cfg.name}] step {step}/{cfg.train.max_steps} {values}"


def _all_sum(value: int) -> float:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        t = torch.tensor(float(value), device=ray.train.torch.get_device())
        torch.distributed.all_reduce(t)
        return t.item()
    return float(value)


startup.imported()  # last: every import above is done
