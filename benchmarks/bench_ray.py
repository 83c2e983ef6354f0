"""What a study costs on a real Ray cluster besides its training work: start-up that grows with
the rows (not the trials), tokenizations per study, reference passes of a second study with the
same inputs, and each trial's overhead, with where its seconds go.

a. study start-up for 5k vs 50k pairs: the driver's work before its first trial that grows with
   the rows (load and validate the file, digest the rows, tokenize once, put rows and tokens in
   the object store), each size measured twice, alternating; it is paid once per study.
b. an 8-trial sweep (builtin tiny model, one trial at a time, as `prefsweep run` runs it, on a
   local Ray started here): tokenizations the study ran (the MLflow parent's
   `prefsweep.tokenizations`), and per trial: wall time of the Tune trial function minus its
   training work (first step to the end of its loop, evaluations and checkpoints included),
   plus Tune's time between one trial's end and the next one's start, with the median split of
   the overhead: the trial's preparation (MLflow run, Optuna link, shared tokens and cache
   entry), Ray Train's start (controller, placement group, worker process), the worker's
   imports, rows fetched, model loaded, first step, and what follows the loop (Train shutdown).
c. a second study on the same model, rows and lengths: the reference passes it ran.

    python benchmarks/bench_ray.py [--trials 8] [--steps 8] [--sizes 5000 50000]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import machine, median, synthetic_data, write_json

from sweep import tracking
from sweep.config.schema import PrefsweepConfig
from sweep.data.loading import load_preference_data
from sweep.data.token_rows import tokenize_rows
from sweep.storage import reference_store
from sweep.storage.fingerprint import data_digest

GRID = {"objective.beta": {"values": [0.05, 0.1, 0.2, 0.4]}, "train.learning_rate": {"values": [1e-4, 1e-3]}}


def write_pairs(path: Path, n: int, seed: int = 0) -> None:
    data = synthetic_data(n, 0, seed)
    with path.open("w") as f:
        for p in data.train:
            f.write(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n")


def study_config(name: str, storage: Path, train: Path, steps: int, trials: int) -> PrefsweepConfig:
    return PrefsweepConfig.model_validate({
        "name": name, "model": {"name_or_path": "builtin:tiny-gpt2"},
        "data": {"train": {"path": str(train)}, "eval": None, "eval_fraction": 0.1, "format": "paired",
                 "max_length": 256, "max_prompt_length": 128},
        "objective": {"name": "dpo"},
        "train": {"per_device_batch_size": 8, "max_steps": steps, "eval_every": steps, "logging_steps": steps},
        "sweep": {"method": "grid" if trials == 8 else "random", "num_trials": trials, "max_concurrent_trials": 1,
                  "early_terminate": None, "parameters": GRID},
        "storage": {"path": str(storage)},
    })


def start_up(cfg: PrefsweepConfig) -> dict:
    """The driver's row-dependent work before the first trial (sweep.study.driver._share_inputs
    and _load_data), timed by part."""
    import ray

    began = time.perf_counter()
    data = load_preference_data(cfg.data, paired=True, seed=cfg.train.seed)
    loaded = time.perf_counter()
    digest = data_digest(data)
    digested = time.perf_counter()
    tokens = tokenize_rows(cfg, data, data_hash=digest)
    tokenized = time.perf_counter()
    refs = [ray.put(data), ray.put(tokens)]
    put = time.perf_counter()
    del refs
    return {"rows": len(data.train) + len(data.eval), "load_s": loaded - began, "digest_s": digested - loaded,
            "tokenize_s": tokenized - digested, "put_s": put - tokenized, "total_s": put - began}


def trial_costs(storage: Path, study: str) -> list[dict]:
    client = tracking.client_for(f"sqlite:///{storage}/mlflow.db")
    experiment = client.get_experiment_by_name("prefsweep")
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`prefsweep.kind` = 'trial' and tags.`prefsweep.study` = '{study}'")
    out = []
    for run in runs:
        times = json.loads(run.data.tags[tracking.TRIAL_TIMES_TAG])
        marks = json.loads(run.data.tags[tracking.STARTUP_TAG])
        wall, work = times["ended"] - times["started"], marks["end"] - marks["first_step"]
        out.append({"started": times["started"], "ended": times["ended"], "wall_s": wall, "work_s": work,
                    "overhead_s": wall - work, "prep_s": times["fit"] - times["started"],
                    "train_start_s": marks["process"] - times["fit"],
                    "imports_s": marks.get("imported", marks["loop"]) - marks["process"],
                    "worker_setup_s": marks["loop"] - marks.get("imported", marks["loop"]), "pid": times.get("pid"),
                    "rows_s": marks["rows"] - marks["loop"], "model_s": marks["model"] - marks["rows"],
                    "to_first_step_s": marks["first_step"] - marks["model"], "after_loop_s": times["ended"] - marks["end"]})
    out.sort(key=lambda c: c["started"])
    for before, after in zip(out, out[1:]):  # one trial at a time: Tune's own time between them
        after["gap_s"] = after["started"] - before["ended"]
    return out


def parent_tags(storage: Path, study: str) -> dict:
    client = tracking.client_for(f"sqlite:///{storage}/mlflow.db")
    experiment = client.get_experiment_by_name("prefsweep")
    (run,) = client.search_runs([experiment.experiment_id],
                                filter_string=f"tags.`prefsweep.kind` = 'study' and tags.`prefsweep.study` = '{study}'")
    return run.data.tags


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1000, help="pairs in the sweep's file")
    parser.add_argument("--sizes", type=int, nargs=2, default=[5000, 50000], help="pairs for the start-up comparison")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from sweep.study.driver import start_study
    from sweep.study.ray_cluster import init_ray

    load_before = machine().get("load_average")
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    storage = work / "runs"
    init_ray(log_to_driver=False)

    files = {}
    for size in args.sizes:
        files[size] = work / f"pairs-{size}.jsonl"
        write_pairs(files[size], size)
    start = {size: [] for size in args.sizes}
    for _ in range(2):
        for size in args.sizes:
            start[size].append(start_up(study_config("startup", storage, files[size], args.steps, 1)))
    small, large = (min(start[s], key=lambda r: r["total_s"]) for s in args.sizes)

    train = work / "pairs.jsonl"
    write_pairs(train, args.rows, seed=1)
    began = time.perf_counter()
    start_study(study_config("sweep", storage, train, args.steps, args.trials))
    sweep_seconds = time.perf_counter() - began
    costs = trial_costs(storage, "sweep")
    tokenizations = parent_tags(storage, "sweep").get(tracking.TOKENIZATIONS_TAG)
    start_study(study_config("again", storage, train, args.steps, 2))
    second_passes = reference_store.count_passes(str(storage / "again"))

    print("\n## study start-up before the first trial (the driver's work that grows with the rows), best of 2")
    for size, row in ((args.sizes[0], small), (args.sizes[1], large)):
        print(f"{size:>6} pairs: {row['total_s']:.2f} s (load {row['load_s']:.2f}, digest {row['digest_s']:.2f}, "
              f"tokenize {row['tokenize_s']:.2f}, object store {row['put_s']:.2f})")
    print(f"\n## {args.trials}-trial sweep on local Ray, one trial at a time, {args.steps} steps x 8 pairs each, "
          f"{args.rows} pairs: {sweep_seconds:.1f} s")
    parts = ["prep_s", "train_start_s", "imports_s", "worker_setup_s", "rows_s", "model_s", "to_first_step_s",
             "after_loop_s"]
    print("per trial, median s: wall " + f"{median([c['wall_s'] for c in costs]):.2f}, work "
          f"{median([c['work_s'] for c in costs]):.2f}, overhead {median([c['overhead_s'] for c in costs]):.2f} = "
          + ", ".join(f"{p.removesuffix('_s')} {median([c[p] for c in costs]):.2f}" for p in parts))
    gap = median([c["gap_s"] for c in costs if "gap_s" in c])
    print(f"between trials (Tune ends one trial function, suggests and starts the next): median {gap:.2f} s; "
          f"trial functions ran in {len({c['pid'] for c in costs})} process(es)")
    # The headline counts Tune's gap too: a sweep pays it per trial like the rest.
    overhead = median([c["overhead_s"] for c in costs]) + gap
    print(f"\ntokenizations per study ({args.trials} trials): {tokenizations}")
    print(f"study start-up, {args.sizes[1] // 1000}k vs {args.sizes[0] // 1000}k pairs: "
          f"{large['total_s']:.2f} s vs {small['total_s']:.2f} s ({large['total_s'] / small['total_s']:.1f}x for "
          f"{args.sizes[1] / args.sizes[0]:.0f}x the rows; once per study, not per trial)")
    print(f"second study reference passes: {second_passes}")
    print(f"per-trial overhead on Ray: {overhead:.1f} s")  # in the trial function + between trials
    result = {"args": vars(args), "machine": machine(), "load_before": load_before, "start_up": start,
              "sweep_seconds": sweep_seconds, "trials": costs, "tokenizations": tokenizations,
              "second_study_reference_passes": second_passes, "per_trial_overhead_s": overhead}
    write_json("ray", result)
    return result


if __name__ == "__main__":
    main()
