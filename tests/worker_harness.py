"""Run the real worker loop in this process, without a Ray cluster: Ray Train's local mode
(`ScalingConfig(num_workers=0)`) runs `train_loop_per_worker` in the caller, and a stand-in
for `ray.train.report` keeps every report (and a copy of each checkpoint, whose temp dir the
loop deletes right after reporting)."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import ray.train
import torch
from ray.train.torch import TorchTrainer

from sweep.config.schema import PrefsweepConfig
from sweep.data.loading import PreferenceData, PreferencePair
from sweep.engine.loop import train_loop_per_worker

WORDS = ("the a cat dog sky blue green tea coffee run walk good bad please thanks help with your garden "
         "bread music today tomorrow always never sure happy").split()


def tiny_pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    """Pairs of varied lengths, so batches need padding and length grouping matters."""
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    return [PreferencePair(text(rng.randint(2, 14)), " " + text(rng.randint(1, 24)), " " + text(rng.randint(1, 24)))
            for _ in range(n)]


def tiny_data(n_train: int = 24, n_eval: int = 8, seed: int = 0) -> PreferenceData:
    pairs = tiny_pairs(n_train + n_eval, seed)
    return PreferenceData(train=pairs[:n_train], eval=pairs[n_train:], format="paired", paired=True, dropped=0)


def tiny_config(**sections) -> PrefsweepConfig:
    base = {
        "name": "unit",
        "data": {"max_length": 48, "max_prompt_length": 16},
        "train": {"max_steps": 4, "eval_every": 2, "logging_steps": 2, "per_device_batch_size": 4,
                  "learning_rate": 1e-3},
    }
    for section, values in sections.items():
        base[section] = {**base.get(section, {}), **values}
    return PrefsweepConfig.model_validate(base)


def cache_entry(cfg: PrefsweepConfig, data, storage: Path, study: str = "study") -> tuple[str | None, str, bool]:
    """The reference-cache entry of `cfg` over `data` under `storage` (computed in this process
    unless there), as a study named `study` asks for it: (entry, note, whether a pass ran)."""
    from sweep.data.token_rows import tokenize_rows
    from sweep.storage.fingerprint import data_digest
    from sweep.study import reference_cache as refcache

    return refcache.ensure_entry(cfg, tokenize_rows(cfg, data), str(storage), str(storage / study),
                                 data_hash=data_digest(data))


def reference_logps(cfg: PrefsweepConfig, data) -> dict:
    """The reference pass's per-row log-probs of `data` tokenized for `cfg`."""
    from sweep.data.token_rows import tokenize_rows
    from sweep.engine.reference_pass import compute_reference_logps

    return compute_reference_logps(cfg, tokenize_rows(cfg, data))


@pytest.fixture
def one_thread():
    """See run_worker: one torch thread for the test, restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_worker(cfg: PrefsweepConfig, data, monkeypatch, tmp_path: Path, *, ref_cache=None,
               run_dir: str | None = None, tokens=None) -> list[dict]:
    """-> the loop's reports in order; each has `_checkpoint` (a kept copy) when one came with it."""
    reports: list[dict] = []
    # One thread: CI and dev machines run tests side by side, and two OpenMP threads fighting
    # for cores make these tiny steps many times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def report(metrics, checkpoint=None, **_):
        kept = None
        if checkpoint is not None:
            kept = tmp_path / f"ckpt-{len(reports)}"
            shutil.copytree(checkpoint.path, kept)
        reports.append({**metrics, "_checkpoint": kept})

    monkeypatch.setattr(ray.train, "report", report)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "data": data, "tokens": tokens,
                           "ref_cache": ref_cache, "run_dir": run_dir},
        scaling_config=ray.train.ScalingConfig(num_workers=0),
        run_config=ray.train.RunConfig(name="local", storage_path=str(tmp_path / "ray")),
    )
    try:
        trainer.fit()
    finally:
        torch.set_num_threads(threads)
    return reports
