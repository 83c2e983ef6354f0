"""Train-step throughput: our DPO step vs TRL's DPOTrainer, and vs the bare forward+backward,
measured so that a loaded machine cannot fool the ratios.

Every variant trains on the same batches (the same row indices per step, from our length-
grouped sampler, or a uniform shuffle for the "no length grouping" pair), and the variants
alternate step by step: step k of each variant runs before step k+1 of any, in an order that
rotates every step. A ratio is taken per step over the two steps that trained on the same
batch, back to back, and reported as the median of those per-pair ratios with its min and max.
Timings are the process's CPU time by default (with one torch thread: other processes on a
shared machine barely move it); `--clock wall` for wall time. When the per-pair ratios spread
too widely (their quartiles more than `--max-spread` apart, as a factor) the line says so
instead of giving a headline number.

a. tokens/s (non-pad tokens of the batches) of our step as the worker loop runs it (collation,
   sweep.engine.batch_loss.batch_loss, backward, clipping, AdamW, LR schedule, metric
   accumulation) and of `trl.DPOTrainer.train()` on the same model weights and rows; with the
   reference cache (TRL: precompute_ref_log_probs=True) and without (a live reference on both).
   TRL's `train()` runs in a thread of its own that a callback pauses after each step, so it
   steps when its turn comes; its step is timed from that turn to its step end.
b. our step vs the floor: the bare policy forward + backward (HF causal-LM loss) on the same
   collated batch. Our side includes collating the batch and the optimizer step; the floor neither.

    python benchmarks/bench_step.py [--model tiny|gpt2] [--steps 64] [--clock cpu|wall] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import threading
import time

import torch
from common import machine, median, model_name, spread_line, synthetic_data, table, write_json

from objectives.registry import get_objective
from sweep.config.schema import PrefsweepConfig
from sweep.data.token_rows import tokenize_rows
from sweep.engine import reference_pass
from sweep.engine.batch_loss import batch_loss
from sweep.engine.collate import PairCollator
from sweep.engine.length_sampler import LengthGroupedSampler, lengths_of
from sweep.engine.loop import lr_lambda
from sweep.engine.metrics import MetricAccumulator
from sweep.engine.precision import autocast_context
from sweep.engine.reference import Reference
from sweep.models.loading import load_causal_lm, load_tokenizer

clock = time.process_time
DEVICE = torch.device("cpu")


def _wall_synced() -> float:
    """Wall time after the GPU's queued work is done (CUDA runs asynchronously)."""
    torch.cuda.synchronize()
    return time.perf_counter()


def make_config(model: str, batch_size: int) -> PrefsweepConfig:
    return PrefsweepConfig.model_validate({
        "name": "bench", "model": {"name_or_path": model},
        "data": {"max_length": 256, "max_prompt_length": 128},
        "objective": {"name": "dpo", "beta": 0.1},
        "train": {"learning_rate": 5e-5, "per_device_batch_size": batch_size, "max_steps": 10**6},
    })


def batch_order(items, batch_size: int, steps: int, grouped: bool, seed: int = 0) -> list[list[int]]:
    """Row indices of each step's batch: our length-grouped sampler's epochs, or uniform shuffles."""
    order: list[int] = []
    epoch = 0
    while len(order) < steps * batch_size:
        if grouped:
            sampler = LengthGroupedSampler(lengths_of(items), batch_size, seed=seed)
            sampler.set_epoch(epoch)
            order += list(sampler)
        else:
            order += torch.randperm(len(items), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        epoch += 1
    return [order[k * batch_size:(k + 1) * batch_size] for k in range(steps)]


class Ours:
    """The worker loop's step (sweep/engine/loop.py), minus reporting, on given row indices."""

    def __init__(self, cfg: PrefsweepConfig, items, reference: Reference | None, policy, batches):
        self.cfg, self.items, self.policy, self.reference, self.batches = cfg, items, policy, reference, batches
        self.objective = get_objective("dpo")
        self.collate = PairCollator(load_tokenizer(cfg.model.name_or_path).pad_token_id)
        self.trainable = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.train.learning_rate, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.window = MetricAccumulator()
        policy.train()

    def step(self, k: int) -> tuple[float, int]:
        began = clock()
        batch = self.collate([(i, self.items[i]) for i in self.batches[k]])
        batch = {key: value.to(DEVICE) for key, value in batch.items()}
        with autocast_context(self.cfg, DEVICE):
            out = batch_loss(self.policy, self.reference, batch, self.objective, self.cfg.objective)
        if not torch.isfinite(out.loss):
            raise FloatingPointError("non-finite loss")
        out.loss.backward()
        self.window.add({"loss": out.loss.detach(), **out.metrics}, weight=len(batch["index"]))
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.train.max_grad_norm)
        self.window.add({"grad_norm": grad_norm.detach()}, weight=1)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return clock() - began, int(batch["attention_mask"].sum())


class Floor:
    """The bare forward+backward of the policy on the collated batch (HF causal-LM loss)."""

    def __init__(self, cfg: PrefsweepConfig, items, policy, pad_id: int, batches):
        self.cfg, self.items, self.policy, self.batches = cfg, items, policy, batches
        self.collate = PairCollator(pad_id)

    def step(self, k: int) -> tuple[float, int]:
        batch = self.collate([(i, self.items[i]) for i in self.batches[k]])
        batch = {key: value.to(DEVICE) for key, value in batch.items()}
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        began = clock()
        with autocast_context(self.cfg, DEVICE):
            loss = self.policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        loss.backward()
        seconds = clock() - began
        self.policy.zero_grad(set_to_none=True)
        return seconds, int(batch["attention_mask"].sum())


class Trl:
    """trl.DPOTrainer.train() in a thread, paused after every step until `step` is called:
    its sampler yields our batches' row indices, so step k trains on the rows ours does."""

    def __init__(self, cfg: PrefsweepConfig, data, policy, ref_model, precompute: bool, batches):
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import DPOConfig, DPOTrainer

        order = [i for batch in batches for i in batch]
        self.go, self.done = threading.Semaphore(0), threading.Semaphore(0)
        self.result: tuple[float, int] = (0.0, 0)
        self.steps, self.error = len(batches), None
        bench = self

        class Paced(TrainerCallback):
            def on_train_begin(self, *args, **kwargs):
                bench.go.acquire()
                bench.began = clock()

            def on_step_end(self, _args, state, _control, **kwargs):
                bench.result = (clock() - bench.began, bench.tokens)
                bench.done.release()
                if state.global_step < bench.steps:
                    bench.go.acquire()
                    bench.began = clock()

        class Counted(DPOTrainer):
            def _get_train_sampler(self, train_dataset=None):
                return order  # a list of indices is a sampler: our batches, in our order

            def training_step(self, model, inputs, *args, **kwargs):
                bench.tokens = int(inputs["attention_mask"].sum())
                return super().training_step(model, inputs, *args, **kwargs)

        args = DPOConfig(
            output_dir=tempfile.mkdtemp(prefix="bench-trl-"), report_to="none", use_cpu=DEVICE.type == "cpu", seed=0,
            disable_tqdm=True, per_device_train_batch_size=cfg.train.per_device_batch_size,
            max_length=cfg.data.max_length, learning_rate=cfg.train.learning_rate, lr_scheduler_type="linear",
            warmup_steps=0, weight_decay=0.0, max_grad_norm=cfg.train.max_grad_norm, beta=cfg.objective.beta,
            loss_type=["sigmoid"], precompute_ref_log_probs=precompute, save_strategy="no", eval_strategy="no",
            logging_strategy="no", dataloader_num_workers=0, max_steps=len(batches), dataloader_drop_last=False,
            # TRL 1.16 defaults to both; our side runs without checkpointing, and bf16 (autocast) on CUDA only.
            gradient_checkpointing=False, bf16=DEVICE.type == "cuda",
        )
        rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in data.train]
        began = time.perf_counter()
        self.trainer = Counted(model=policy, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(rows),
                               processing_class=load_tokenizer(cfg.model.name_or_path), callbacks=[Paced()])
        self.setup_seconds = time.perf_counter() - began  # includes TRL's reference precompute
        # Started at the first step, not here: a trainer built later resets accelerate's shared
        # state, which a train() starting meanwhile would read half-made.
        self.thread = threading.Thread(target=self._train, daemon=True)

    def _train(self) -> None:
        try:
            self.trainer.train()
        except BaseException as exc:  # the main thread waits on `done`: tell it
            self.error = exc
            self.done.release()

    def step(self, k: int) -> tuple[float, int]:
        if k == 0:
            self.thread.start()
        self.go.release()
        self.done.acquire()
        if self.error is not None:
            raise RuntimeError("TRL's train() failed") from self.error
        if k == self.steps - 1:
            self.thread.join()  # its end-of-training work, before anything else is timed
        return self.result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "gpt2"], default="tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=64, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="steps per variant before measuring")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the CPU clock sees only work)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu", help="cpu: process CPU time (CPU only)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: both sides on the GPU under bf16 autocast, wall clock after a synchronize")
    parser.add_argument("--max-spread", type=float, default=2.0,
                        help="no headline when a ratio's per-pair quartiles are further apart than this factor")
    args = parser.parse_args(argv)
    global clock, DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda":
        args.clock = "wall"
        clock = _wall_synced
    else:
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        torch.set_num_threads(args.threads)

    load_before = machine().get("load_average")
    model = model_name(args.model)
    cfg = make_config(model, args.batch_size)
    data = synthetic_data(args.rows, 64)
    tokens = tokenize_rows(cfg, data)
    items = tokens.train
    began = clock()
    cache = reference_pass.compute_reference_logps(cfg, tokens, DEVICE)["train"].to(DEVICE)
    pass_seconds = clock() - began
    base = load_causal_lm(model)
    fresh = lambda: copy.deepcopy(base).to(DEVICE)  # noqa: E731  same weights everywhere
    frozen = fresh().eval().requires_grad_(False)
    total = args.warmup + args.steps
    grouped = batch_order(items, args.batch_size, total, grouped=True)
    uniform = batch_order(items, args.batch_size, total, grouped=False)

    variants = {
        "ours (ref cache)": Ours(cfg, items, Reference(cached=cache), fresh(), grouped),
        "ours (live ref)": Ours(cfg, items, Reference(model=frozen), fresh(), grouped),
        "trl (precompute_ref_log_probs)": Trl(cfg, data, fresh(), fresh(), True, grouped),
        "trl (live ref)": Trl(cfg, data, fresh(), fresh(), False, grouped),
        "ours (ref cache, uniform batches)": Ours(cfg, items, Reference(cached=cache), fresh(), uniform),
        "trl (precompute, uniform batches)": Trl(cfg, data, fresh(), fresh(), True, uniform),
        "floor (bare forward+backward)": Floor(cfg, items, fresh(), load_tokenizer(model).pad_token_id, grouped),
    }
    names = list(variants)
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
    for k in range(total):
        shift = k % len(names)  # rotate, so no variant always follows the same one
        for name in names[shift:] + names[:shift]:
            result = variants[name].step(k)
            if k >= args.warmup:
                samples[name].append(result)

    rows = []
    for name, got in samples.items():
        seconds, counted = sum(s for s, _ in got), sum(t for _, t in got)
        rows.append({"variant": name, "steps": len(got), "tokens_per_s": median([t / s for s, t in got]),
                     "tokens_per_s_mean": counted / seconds, "step_ms_median": 1e3 * median([s for s, _ in got]),
                     "tokens_per_step": counted / len(got)})

    def per_pair(ours: str, other: str) -> list[float]:
        """other's step time over ours on the same batch: ours' tokens/s over theirs."""
        return [b[0] / a[0] for a, b in zip(samples[ours], samples[other])]

    pairs = {
        "dpo step vs TRL DPOTrainer (ref cache)": per_pair("ours (ref cache)", "trl (precompute_ref_log_probs)"),
        "dpo step vs TRL DPOTrainer (no cache)": per_pair("ours (live ref)", "trl (live ref)"),
        "dpo step vs TRL DPOTrainer (ref cache, no length grouping)":
            per_pair("ours (ref cache, uniform batches)", "trl (precompute, uniform batches)"),
        # time ratio, not throughput: ours over the floor's
        "dpo step time vs bare forward+backward": [1 / r for r in per_pair("ours (ref cache)",
                                                                           "floor (bare forward+backward)")],
    }
    print(f"\n## train step on {args.device} ({args.clock} clock, {args.threads} torch thread(s)), {args.model} model "
          f"({sum(p.numel() for p in base.parameters()):,} parameters), batch {args.batch_size} pairs, "
          f"{args.steps} steps per variant after {args.warmup} warm-up, alternating step by step on the same batches")
    print(table(rows, ["variant", "steps", "tokens_per_s", "tokens_per_s_mean", "step_ms_median", "tokens_per_step"]))
    print(f"reference pass over {len(items)} pairs: {pass_seconds:.2f} s ({args.clock} clock); TRL set-up (its "
          f"precompute included): " + ", ".join(f"{v.setup_seconds:.1f} s" for v in variants.values() if isinstance(v, Trl)))
    lines = {name: spread_line(name, ratios, args.max_spread) for name, ratios in pairs.items()}
    result = {"model": args.model, "args": vars(args), "machine": machine(), "load_before": load_before,
              "variants": rows, "reference_pass_seconds": pass_seconds,
              "ratios": {name: line["summary"] for name, line in lines.items()}}
    write_json(f"step-{args.model}-{args.clock}", result)
    for line in lines.values():
        print(line["text"])
    return result


if __name__ == "__main__":
    main()
