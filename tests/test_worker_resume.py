"""A worker restarted from a checkpoint: it says so in its first report (the driver prints
it), continues from that step, and a run whose last checkpoint was already its final step
reports that checkpoint's metrics again instead of leaving the trial short of its end."""
from __future__ import annotations

import pytest
import ray.train
from worker_harness import one_thread, run_worker, tiny_config, tiny_data  # noqa: F401


def resume_from(monkeypatch, directory):
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: ray.train.Checkpoint.from_directory(str(directory)))


@pytest.mark.usefixtures("one_thread")
def test_resuming_midway_and_at_the_end(monkeypatch, tmp_path):
    cfg, data = tiny_config(), tiny_data()
    first = run_worker(cfg, data, monkeypatch, tmp_path / "first")
    assert [r["step"] for r in first] == [2, 4] and all("resumed_from_step" not in r for r in first)

    resume_from(monkeypatch, first[0]["_checkpoint"])  # cut off after step 2
    midway = run_worker(cfg, data, monkeypatch, tmp_path / "midway")
    assert [r["step"] for r in midway] == [4] and midway[0]["resumed_from_step"] == 2

    resume_from(monkeypatch, first[1]["_checkpoint"])  # cut off after its last checkpoint
    (again,) = run_worker(cfg, data, monkeypatch, tmp_path / "end")
    assert again["resumed_from_step"] == 4 and again["step"] == 4 and again["_checkpoint"] is not None
    assert again["eval/loss"] == first[1]["eval/loss"]
