"""Train-step throughput: our DPO step vs TRL's DPOTrainer, and vs the bare forward+backward.

a. tokens/s (non-pad tokens of the batches each side trained on) of our step, as the worker
   loop runs it (DataLoader + collation, sweep.engine.batch_loss.batch_loss, backward, clipping,
   AdamW, LR schedule, metric accumulation), and of `trl.DPOTrainer.train()` on the same
   model, rows, batch size and machine; with the reference cache (TRL: precompute_ref_log_probs
   =True) and without (a live reference model on both sides). Variants run in interleaved
   rounds, so a change in machine load hits all of them alike.
b. our step time vs the floor: the bare policy forward + backward (HF causal-LM loss) on the
   very same collated batches, alternating batch by batch. Our side includes collating the
   batch and the optimizer step; the floor does neither.

    python benchmarks/bench_step.py [--model tiny|gpt2] [--rounds 3] [--steps 30]
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch
from common import machine, median, model_name, synthetic_data, table, write_json

from objectives.registry import get_objective
from sweep.config.schema import PrefsweepConfig
from sweep.data.token_rows import tokenize_rows
from sweep.data.tokenize import tokenized_splits
from sweep.engine import reference_pass
from sweep.engine.batch_loss import batch_loss
from sweep.engine.collate import PairCollator
from sweep.engine.loop import _epochs, lr_lambda
from sweep.engine.metrics import MetricAccumulator
from sweep.engine.reference import Reference
from sweep.engine.rows import make_loader
from sweep.models.loading import load_causal_lm, load_tokenizer

# Wall time by default; `--clock cpu` times with this process's CPU time instead, which other
# processes on a shared machine barely move (use with --threads 1: idle OpenMP threads spin).
clock = time.perf_counter


def make_config(model: str, batch_size: int, group_by_length: bool = True) -> PrefsweepConfig:
    return PrefsweepConfig.model_validate({
        "name": "bench", "model": {"name_or_path": model},
        "data": {"max_length": 256, "max_prompt_length": 128},
        "objective": {"name": "dpo", "beta": 0.1},
        "train": {"learning_rate": 5e-5, "per_device_batch_size": batch_size, "max_steps": 10**6,
                  "group_by_length": group_by_length},
    })


class Ours:
    """The worker loop's step (sweep/engine/loop.py), minus reporting."""

    def __init__(self, cfg: PrefsweepConfig, items, reference: Reference | None, policy):
        self.cfg, self.policy, self.reference = cfg, policy, reference
        self.objective = get_objective("dpo")
        tokenizer = load_tokenizer(cfg.model.name_or_path)
        loader = make_loader(items, cfg, PairCollator(tokenizer.pad_token_id),
                             batch_size=cfg.train.per_device_batch_size, shuffle=True)
        self.batches = _epochs(loader, 0)
        self.trainable = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.train.learning_rate, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.window = MetricAccumulator()
        policy.train()

    def step(self, batch=None) -> int:
        batch = next(self.batches) if batch is None else batch
        out = batch_loss(self.policy, self.reference, batch, self.objective, self.cfg.objective)
        loss = out.loss
        if not torch.isfinite(loss):
            raise FloatingPointError("non-finite loss")
        loss.backward()
        self.window.add({"loss": loss.detach(), **out.metrics}, weight=len(batch["index"]))
        tokens = int(batch["attention_mask"].sum())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.train.max_grad_norm)
        self.window.add({"grad_norm": grad_norm.detach()}, weight=1)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return tokens

    def run(self, steps: int) -> list[tuple[float, int]]:
        out, last = [], clock()
        for _ in range(steps):
            tokens = self.step()
            now = clock()
            out.append((now - last, tokens))
            last = now
        return out


class Trl:
    """trl.DPOTrainer on the same rows; each `run` is one `train()` of `steps` steps, timed
    step end to step end by a callback, tokens counted from the batches it trained on."""

    def __init__(self, cfg: PrefsweepConfig, data, policy, ref_model, precompute: bool):
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import DPOConfig, DPOTrainer

        times: list[float] = []
        tokens: list[int] = []

        class Clock(TrainerCallback):
            def on_train_begin(self, *args, **kwargs):
                times.append(clock())

            def on_step_end(self, *args, **kwargs):
                times.append(clock())

        class Counted(DPOTrainer):
            def training_step(self, model, inputs, *args, **kwargs):
                tokens.append(int(inputs["attention_mask"].sum()))
                return super().training_step(model, inputs, *args, **kwargs)

        self.times, self.tokens = times, tokens
        self.out_dir = tempfile.mkdtemp(prefix="bench-trl-")
        args = DPOConfig(
            output_dir=self.out_dir, report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
            per_device_train_batch_size=cfg.train.per_device_batch_size, max_length=cfg.data.max_length,
            learning_rate=cfg.train.learning_rate, lr_scheduler_type="linear", warmup_steps=0,
            weight_decay=0.0, max_grad_norm=cfg.train.max_grad_norm, beta=cfg.objective.beta,
            loss_type=["sigmoid"], precompute_ref_log_probs=precompute, save_strategy="no", eval_strategy="no",
            logging_strategy="no", dataloader_num_workers=0, max_steps=10,
            # TRL 1.16 defaults to both; our side runs float32 without checkpointing, so TRL must too.
            gradient_checkpointing=False, bf16=False,
        )
        rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in data.train]
        began = clock()
        self.trainer = Counted(model=policy, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(rows),
                               processing_class=load_tokenizer(cfg.model.name_or_path), callbacks=[Clock()])
        self.setup_seconds = clock() - began  # includes TRL's reference precompute

    def run(self, steps: int) -> list[tuple[float, int]]:
        self.times.clear()
        self.tokens.clear()
        self.trainer.args.max_steps = steps
        self.trainer.train()
        durations = [b - a for a, b in zip(self.times, self.times[1:])]
        return list(zip(durations, self.tokens[:len(durations)]))


def floor_vs_step(cfg, items, cache, policy, batches: int) -> dict:
    """Alternating per batch: the bare forward+backward on the collated batch, then our full
    step on the same rows, collation included (the DataLoader collates inside the worker's step)."""
    ours = Ours(cfg, items, Reference(cached=cache), policy)
    collate = PairCollator(load_tokenizer(cfg.model.name_or_path).pad_token_id)
    index_lists = [next(ours.batches)["index"].tolist() for _ in range(batches + 3)]
    floor_times, step_times = [], []
    for k, indices in enumerate(index_lists):
        rows = [(i, items[i]) for i in indices]
        batch = collate(rows)
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        began = clock()
        policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss.backward()
        mid = clock()
        policy.zero_grad(set_to_none=True)
        mid2 = clock()
        ours.step(collate(rows))
        end = clock()
        if k >= 3:  # warm-up
            floor_times.append(mid - began)
            step_times.append(end - mid2)
    # Per batch, the two ran back to back: the median of their ratios resists load bursts.
    return {"ratio_median": median([s / f for s, f in zip(step_times, floor_times)]),
            "ratio_total": sum(step_times) / sum(floor_times), "batches": batches,
            "floor_ms_median": 1e3 * median(floor_times), "step_ms_median": 1e3 * median(step_times)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "gpt2"], default="tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8,
                        help="interleaved rounds: more, shorter rounds spread load changes evenly")
    parser.add_argument("--steps", type=int, default=8, help="measured steps per variant per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args(argv)
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = machine().get("load_average")
    model = model_name(args.model)
    cfg = make_config(model, args.batch_size)
    data = synthetic_data(args.rows, 64)
    tokenizer = load_tokenizer(model)
    items, _ = tokenized_splits(cfg.data, True, data, tokenizer)
    began = clock()
    cache = reference_pass.compute_reference_logps(cfg, tokenize_rows(cfg, data))["train"]
    pass_seconds = clock() - began
    base = load_causal_lm(model)
    fresh = lambda: copy.deepcopy(base)  # noqa: E731  same weights everywhere
    frozen = fresh().eval().requires_grad_(False)

    variants = {
        "ours (ref cache)": Ours(cfg, items, Reference(cached=cache), fresh()),
        "ours (live ref)": Ours(cfg, items, Reference(model=frozen), fresh()),
        "ours (ref cache, no length grouping)": Ours(make_config(model, args.batch_size, False), items,
                                                     Reference(cached=cache), fresh()),
        "trl (precompute_ref_log_probs)": Trl(cfg, data, fresh(), fresh(), precompute=True),
        "trl (live ref)": Trl(cfg, data, fresh(), fresh(), precompute=False),
    }
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, variant in variants.items():
            samples[name] += variant.run(args.warmup + args.steps)[args.warmup:]

    rows = []
    for name, got in samples.items():
        seconds, tokens = sum(s for s, _ in got), sum(t for _, t in got)
        # tokens_per_s: the median of per-step rates, which bursts of other processes on a
        # shared machine move far less than a total/total mean (also reported).
        rows.append({"variant": name, "steps": len(got), "tokens_per_s": median([t / s for s, t in got]),
                     "tokens_per_s_mean": tokens / seconds, "step_ms_median": 1e3 * median([s for s, _ in got]),
                     "tokens_per_step": tokens / len(got)})
    by = {r["variant"]: r for r in rows}
    floor = floor_vs_step(cfg, items, cache, fresh(), batches=args.rounds * args.steps)
    ratios = {
        "dpo step vs TRL DPOTrainer (ref cache)": by["ours (ref cache)"]["tokens_per_s"]
        / by["trl (precompute_ref_log_probs)"]["tokens_per_s"],
        "dpo step vs TRL DPOTrainer (no cache)": by["ours (live ref)"]["tokens_per_s"] / by["trl (live ref)"]["tokens_per_s"],
        "dpo step vs TRL DPOTrainer (ref cache, no length grouping)":
            by["ours (ref cache, no length grouping)"]["tokens_per_s"] / by["trl (precompute_ref_log_probs)"]["tokens_per_s"],
        "dpo step time vs bare forward+backward": floor["ratio_median"],
    }
    print(f"\n## train step ({args.clock} clock), {args.model} model ({sum(p.numel() for p in base.parameters()):,} parameters), "
          f"batch {args.batch_size} pairs, {args.rounds} rounds x {args.steps} steps")
    print(table(rows, ["variant", "steps", "tokens_per_s", "tokens_per_s_mean", "step_ms_median", "tokens_per_step"]))
    print(f"\nfloor: bare forward+backward {floor['floor_ms_median']:.2f} ms/batch (median), our step "
          f"{floor['step_ms_median']:.2f} ms/batch, step/floor {floor['ratio_median']:.3f} (median of per-batch "
          f"ratios; total/total {floor['ratio_total']:.3f}); reference pass over {len(items)} pairs: {pass_seconds:.2f} s")
    result = {"model": args.model, "args": vars(args), "machine": machine(), "load_before": load_before,
              "variants": rows, "floor": floor,
              "reference_pass_seconds": pass_seconds, "ratios": ratios,
              "trl_setup_seconds": {n: v.setup_seconds for n, v in variants.items() if isinstance(v, Trl)}}
    write_json(f"step-{args.model}-{args.clock}", result)
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    return result


if __name__ == "__main__":
    main()
