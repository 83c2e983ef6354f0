"""The GPU path, checked on the GPUs of this machine (`benchmarks/gpu_check.sh` runs it): bf16
autocast, SDPA attention, torch.compile, DDP through Ray Train, fractional GPUs per trial, and
our step vs TRL's DPOTrainer on a GPT-2-sized model with tokens/s and MFU.

Each check prints one line, `ok`, `FAILED` or `skipped` with why; the exit code is the number
of failed checks. `--device cpu` runs the same checks that can run without a GPU (autocast in
bf16 on CPU, compile, the step comparison) on the tiny model: that is how this script itself
is tested where no GPU is lent.

    python benchmarks/gpu_check.py [--device cuda] [--model gpt2] [--steps 20] [--peak-tflops N]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import REPO, model_name, synthetic_data

from objectives.registry import get_objective
from sweep.config.schema import PrefsweepConfig
from sweep.data.token_rows import tokenize_rows
from sweep.engine.batch_loss import batch_loss
from sweep.engine.collate import PairCollator
from sweep.engine.precision import autocast_context
from sweep.engine.reference import Reference
from sweep.models.loading import load_causal_lm

# Dense bf16 peak, TFLOP/s, by device name (vendor data sheets); --peak-tflops overrides.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0,
                    "RTX 4090": 165.0, "A6000": 155.0, "V100": 125.0, "T4": 65.0}
failures: list[str] = []


def check(name: str, fn) -> None:
    began = time.perf_counter()
    try:
        note = fn()
    except Skipped as why:
        print(f"skipped  {name}: {why}", flush=True)
        return
    except Exception as exc:  # one failed check must not hide the others
        failures.append(name)
        print(f"FAILED   {name}: {type(exc).__name__}: {exc}", flush=True)
        return
    print(f"ok       {name} ({time.perf_counter() - began:.1f} s){': ' + note if note else ''}", flush=True)


class Skipped(Exception):
    pass


def config(model: str, **sections) -> PrefsweepConfig:
    base = {"name": "gpu-check", "model": {"name_or_path": model},
            "data": {"max_length": 256, "max_prompt_length": 128}, "objective": {"name": "dpo", "beta": 0.1},
            "train": {"learning_rate": 1e-5, "per_device_batch_size": 8, "max_steps": 10}}
    for key, values in sections.items():
        base[key] = {**base.get(key, {}), **values}
    return PrefsweepConfig.model_validate(base)


def batches(cfg: PrefsweepConfig, device, n: int = 4) -> list[dict]:
    tokens = tokenize_rows(cfg, synthetic_data(8 * n, 8))
    collate = PairCollator(0)
    return [{k: v.to(device) for k, v in collate([(i, tokens.train[i]) for i in range(8 * b, 8 * b + 8)]).items()}
            for b in range(n)]


def losses(cfg: PrefsweepConfig, model, device, data, *, autocast: bool) -> list[float]:
    objective, reference = get_objective("dpo"), Reference(model=copy.deepcopy(model).eval().requires_grad_(False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.learning_rate)
    out = []
    for batch in data:
        context = autocast_context(cfg, device) if autocast else torch.autocast(device.type, enabled=False)
        with context:
            loss = batch_loss(model, reference, batch, objective, cfg.objective).loss
        loss.backward()
        if not all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None):
            raise FloatingPointError("a gradient is not finite")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        out.append(loss.item())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--model", choices=["tiny", "gpt2"], default="gpt2")
    parser.add_argument("--steps", type=int, default=20, help="measured steps of the step comparison")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible to torch: nothing to check (torch", torch.__version__, ")")
        return 1
    model = model_name(args.model)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    name = torch.cuda.get_device_name(0) if gpus else "cpu"
    print(f"device: {name} x{gpus}, torch {torch.__version__}, model {args.model}", flush=True)
    cfg = config(model)
    data = batches(cfg, device)
    base = load_causal_lm(model)

    def autocast_bf16():
        if device.type == "cpu":
            raise Skipped("bf16 autocast is for CUDA (sweep.engine.precision runs float32 on CPU)")
        fp32 = losses(cfg, copy.deepcopy(base).to(device), device, data, autocast=False)
        bf16 = losses(cfg, copy.deepcopy(base).to(device), device, data, autocast=True)
        if abs(bf16[0] - fp32[0]) > 5e-2:  # step 0: both at the reference, ln 2
            raise AssertionError(f"first loss bf16 {bf16[0]:.4f} vs float32 {fp32[0]:.4f}")
        return f"losses float32 {[round(v, 4) for v in fp32]}, bf16 {[round(v, 4) for v in bf16]}"

    def sdpa():
        impl = getattr(base.config, "_attn_implementation", None)
        if impl != "sdpa":
            raise AssertionError(f"attention implementation is {impl!r}")
        return "attn_implementation sdpa"

    def compiled():
        eager = losses(cfg, copy.deepcopy(base).to(device), device, data, autocast=True)
        model = copy.deepcopy(base).to(device)
        model.compile()
        got = losses(cfg, model, device, data, autocast=True)
        if abs(got[0] - eager[0]) > 1e-2:
            raise AssertionError(f"compiled first loss {got[0]:.4f} vs eager {eager[0]:.4f}")
        return f"losses eager {[round(v, 4) for v in eager]}, compiled {[round(v, 4) for v in got]}"

    def step_vs_trl():
        out = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        command = [sys.executable, str(REPO / "benchmarks" / "bench_step.py"), "--model", args.model, "--device",
                   args.device, "--steps", str(args.steps), "--rows", "256"]
        proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "BENCH_OUT": str(out)})
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        result = json.loads(next(out.glob("step-*.json")).read_text())
        ours = next(v for v in result["variants"] if v["variant"] == "ours (ref cache)")
        params = sum(p.numel() for p in base.parameters())
        # Training FLOPs per processed token: 6 x parameters (forward + backward), padded tokens included.
        flops = 6 * params * ours["tokens_per_s"]
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        mfu = f", MFU {flops / (peak * 1e12):.1%} of {peak:.0f} TFLOP/s" if peak and gpus else ""
        ratios = "; ".join(line for line in proc.stdout.splitlines() if line.startswith("dpo step"))
        return f"ours {ours['tokens_per_s']:,.0f} tokens/s{mfu}; {ratios}"

    def ray_train_ddp():
        if gpus < 1:
            raise Skipped("needs a GPU")
        workers = min(gpus, 8)
        proc, _ = prefsweep("train", {"resources": {"num_workers": workers, "use_gpu": True}}, model)
        return f"{workers} DDP worker(s): " + proc.stdout.strip().splitlines()[-1][:200]

    def fractional():
        if gpus < 1:
            raise Skipped("needs a GPU")
        _, storage = prefsweep("run", {"resources": {"num_workers": 1, "use_gpu": True, "gpus_per_worker": 0.25},
                                       "sweep": {"method": "random", "num_trials": 4, "max_concurrent_trials": 4,
                                                 "early_terminate": None}}, model)
        spans = trial_spans(storage)
        together = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
        if len(spans) != 4 or together < 2:
            raise AssertionError(f"{len(spans)} trials, at most {together} at once: {spans}")
        return f"4 trials at 0.25 GPU each, up to {together} at once"

    for title, fn in (("bf16 autocast", autocast_bf16), ("SDPA attention", sdpa), ("torch.compile", compiled),
                      (f"our step vs TRL DPOTrainer, {args.model}", step_vs_trl), ("DDP via Ray Train", ray_train_ddp),
                      ("fractional GPUs per trial", fractional)):
        check(title, fn)
    print(f"{len(failures)} check(s) failed" + (f": {', '.join(failures)}" if failures else ""))
    return len(failures)


def trial_spans(storage: Path) -> list[tuple[float, float]]:
    """(start, end) of every finished trial of the study under `storage`, from its MLflow tags."""
    from sweep import tracking

    client = tracking.client_for(f"sqlite:///{storage}/mlflow.db")
    experiment = client.get_experiment_by_name("prefsweep")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`prefsweep.kind` = 'trial'")
    times = [json.loads(run.data.tags[tracking.TRIAL_TIMES_TAG]) for run in runs if tracking.TRIAL_TIMES_TAG in run.data.tags]
    return sorted((t["started"], t["ended"]) for t in times)


def prefsweep(verb: str, sections: dict, model: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`prefsweep VERB` on a small config with `sections` over it -> (its process, its storage);
    raises with its output's end on failure."""
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    raw = config(model, train={"max_steps": 20, "eval_every": 10, "logging_steps": 10}).model_dump(mode="json")
    for key, values in sections.items():
        raw[key] = {**raw[key], **values}
    raw["storage"] = {"path": str(work / "runs")}
    raw["data"]["train"] = {"path": "builtin:demo/train"}
    raw["data"]["eval"] = {"path": "builtin:demo/eval"}
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = subprocess.run([str(Path(sys.executable).parent / "prefsweep"), verb, str(path)], capture_output=True,
                          text=True)
    if proc.returncode:
        raise RuntimeError(f"prefsweep {verb} exited {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}")
    return proc, work / "runs"


if __name__ == "__main__":
    sys.exit(main())
