"""An N-trial sweep with and without the study's shared reference cache.

c. wall time and total compute (CPU seconds of every process) of N trials, each a fresh
   process running the real worker loop (sweep.engine.loop.train_loop_per_worker, in Ray
   Train's local mode), one after another as `max_concurrent_trials: 1` runs them; with the
   cache, plus the one reference pass (also its own process, as the Ray task is), and the
   number of reference passes the study recorded.
d. peak memory (max RSS) per trial process, with and without the cache.

The cluster's own overhead (~20 s per Tune+Train trial on 2 cores, the same either way) is
left out; tests/e2e/test_refcache_sweep.py runs the real thing and counts its passes.

    python benchmarks/bench_sweep.py [--model tiny|gpt2] [--trials 4] [--steps 40]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time

from common import machine, model_name, synthetic_data, table, write_json

from sweep.config.schema import PrefsweepConfig
from sweep.data.token_rows import tokenize_rows
from sweep.storage import reference_store
from sweep.storage.fingerprint import data_digest
from sweep.study import reference_cache as refcache

GRID = [(1e-4, 0.1), (3e-4, 0.3), (1e-3, 0.1), (3e-3, 0.3), (1e-4, 0.3), (3e-4, 0.1), (1e-3, 0.3), (3e-3, 0.1)]


def trial_config(model: str, steps: int, lr: float, beta: float) -> PrefsweepConfig:
    return PrefsweepConfig.model_validate({
        "name": "bench-sweep", "model": {"name_or_path": model},
        "data": {"max_length": 256, "max_prompt_length": 128},
        "objective": {"name": "dpo", "beta": beta},
        "train": {"learning_rate": lr, "per_device_batch_size": 8, "max_steps": steps, "eval_every": steps // 2,
                  "logging_steps": steps // 2},
    })


def _usage() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": own.ru_utime + own.ru_stime, "peak_rss_mib": own.ru_maxrss / 1024}


def _warm(config: dict) -> None:
    """Load the model and tokenizer once, untimed: the lazy imports behind a first
    from_pretrained (seconds) are start-up every process pays, not work."""
    from sweep.models.loading import load_causal_lm, load_tokenizer

    load_causal_lm(config["model"]["name_or_path"])
    load_tokenizer(config["model"]["name_or_path"])


def _trial_process(config: dict, data, entry, threads: int, queue) -> None:
    import ray.train
    import torch
    from ray.train.torch import TorchTrainer

    from sweep.engine.loop import train_loop_per_worker

    torch.set_num_threads(threads)
    _warm(config)
    began, cpu0 = time.perf_counter(), time.process_time()  # after the start-up every process pays
    last: dict = {}
    ray.train.report = lambda metrics, checkpoint=None, **_: last.update(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        TorchTrainer(train_loop_per_worker,
                     train_loop_config={"config": config, "data": data, "ref_cache": entry},
                     scaling_config=ray.train.ScalingConfig(num_workers=0),
                     run_config=ray.train.RunConfig(name="bench", storage_path=tmp)).fit()
    queue.put({"work_wall_s": time.perf_counter() - began, "work_cpu_s": time.process_time() - cpu0, **_usage(),
               "eval_loss": last.get("eval/loss")})


def _pass_process(config: dict, data, study: str, threads: int, queue) -> None:
    import torch

    from sweep.engine import loop as worker  # noqa: F401  the imports a trial process pays too, outside the timing

    torch.set_num_threads(threads)
    _warm(config)
    began, cpu0 = time.perf_counter(), time.process_time()
    cfg = PrefsweepConfig.model_validate(config)
    entry, _, computed = refcache.ensure_entry(cfg, tokenize_rows(cfg, data), study, study, data_hash=data_digest(data))
    queue.put({"work_wall_s": time.perf_counter() - began, "work_cpu_s": time.process_time() - cpu0, **_usage(),
               "entry": entry, "computed": computed})


def _in_process(target, *args) -> dict:
    """Run target in a fresh process (spawned: nothing inherited from this one) -> its report
    plus the process's whole wall time."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    began = time.perf_counter()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode:
        raise RuntimeError(f"{target.__name__} exited {proc.exitcode}")
    return {**result, "wall_s": time.perf_counter() - began}


def sweep(model: str, data, trials: int, steps: int, threads: int, cached: bool) -> dict:
    study = tempfile.mkdtemp(prefix="bench-study-")
    began = time.perf_counter()
    entry, reference_pass = None, None
    configs = [trial_config(model, steps, lr, beta).model_dump(mode="json") for lr, beta in GRID[:trials]]
    if cached:
        reference_pass = _in_process(_pass_process, configs[0], data, study, threads)
        entry = reference_pass["entry"]
    per_trial = [_in_process(_trial_process, config, data, entry, threads) for config in configs]
    wall = time.perf_counter() - began
    processes = per_trial + ([reference_pass] if reference_pass else [])
    total = lambda key: sum(p[key] for p in processes)  # noqa: E731
    return {"cached": cached, "wall_s": wall, "cpu_s": total("cpu_s"), "work_wall_s": total("work_wall_s"),
            "work_cpu_s": total("work_cpu_s"), "reference_passes": reference_store.count_passes(study),
            "reference_pass": reference_pass, "trials": per_trial,
            "peak_rss_mib_max": max(t["peak_rss_mib"] for t in per_trial)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "gpt2"], default="tiny")
    parser.add_argument("--trials", type=int, default=4, choices=range(1, len(GRID) + 1))
    parser.add_argument("--steps", type=int, default=64, help="steps per trial (64 x 8 pairs = 2 epochs of 256 rows)")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--eval-rows", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial process")
    args = parser.parse_args(argv)

    model = model_name(args.model)
    data = synthetic_data(args.rows, args.eval_rows)
    without = sweep(model, data, args.trials, args.steps, args.threads, cached=False)
    with_cache = sweep(model, data, args.trials, args.steps, args.threads, cached=True)
    rows = []
    for result in (without, with_cache):
        rows.append({"sweep": "shared reference cache" if result["cached"] else "live reference per trial",
                     "trials": args.trials, "wall_s": result["wall_s"], "cpu_s": result["cpu_s"],
                     "work_wall_s": result["work_wall_s"], "work_cpu_s": result["work_cpu_s"],
                     "reference_passes": result["reference_passes"],
                     "peak_rss_mib_per_trial": result["peak_rss_mib_max"],
                     "eval_loss_trial1": result["trials"][0]["eval_loss"]})
    print(f"\n## {args.trials}-trial sweep, {args.model} model, {args.steps} steps x 8 pairs per trial, "
          f"{args.rows} train + {args.eval_rows} eval pairs, one trial at a time")
    print(table(rows, ["sweep", "trials", "wall_s", "cpu_s", "work_wall_s", "work_cpu_s", "reference_passes",
                       "peak_rss_mib_per_trial", "eval_loss_trial1"]))
    print("wall_s/cpu_s: whole processes (start-up, imports, a warm-up model load included); work_*: from the "
          "trial's (or the pass's) first line of work to its end")
    if with_cache["reference_pass"]:
        print(f"reference pass: {with_cache['reference_pass']['work_wall_s']:.2f} s wall, "
              f"{with_cache['reference_pass']['work_cpu_s']:.2f} s CPU")
    ratios = {
        f"{args.trials}-trial sweep wall time, no cache vs cache": without["work_wall_s"] / with_cache["work_wall_s"],
        f"{args.trials}-trial sweep total compute, no cache vs cache": without["work_cpu_s"] / with_cache["work_cpu_s"],
        f"{args.trials}-trial sweep wall time incl. process start-up, no cache vs cache":
            without["wall_s"] / with_cache["wall_s"],
        "peak memory per trial, cache vs no cache": with_cache["peak_rss_mib_max"] / without["peak_rss_mib_max"],
    }
    result = {"model": args.model, "args": vars(args), "machine": machine(), "without_cache": without,
              "with_cache": with_cache, "ratios": ratios}
    write_json(f"sweep-{args.model}", result)
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    print(f"reference passes in the {args.trials}-trial sweep with the cache: {with_cache['reference_passes']}")
    return result


if __name__ == "__main__":
    main()
