"""`prefsweep train` on the demo config: a real TorchTrainer run on the session Ray cluster."""
from __future__ import annotations

import time

import pytest
from helpers import mlflow_client, runs_by_kind
from transformers import AutoModelForCausalLM, AutoTokenizer

pytestmark = pytest.mark.ray

TRL_NAMES = {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
             "logps/chosen", "logps/rejected", "tokens_per_second"}


def test_train_demo_logs_metrics_and_leaves_a_loadable_checkpoint(cli, tmp_path):
    storage = tmp_path / "runs"
    started = time.monotonic()
    proc = cli("train", "configs/demo.yaml", "--set", f"storage.path={storage}")
    elapsed = time.monotonic() - started
    assert elapsed < 300, f"demo train took {elapsed:.0f}s"
    assert "eval/rewards/accuracies" in proc.stdout
    assert "step 150/150" in proc.stdout  # progress lines reach the console

    (run,) = runs_by_kind(storage, "train")
    assert run.info.status == "FINISHED"
    metrics = set(run.data.metrics)
    assert TRL_NAMES <= metrics and {f"eval/{m}" for m in TRL_NAMES - {"tokens_per_second"}} <= metrics
    history = mlflow_client(storage).get_metric_history(run.info.run_id, "loss")
    assert len(history) >= 3 and sorted(m.step for m in history) == [m.step for m in history]
    assert run.data.params["objective.name"] == "dpo" and run.data.params["train.learning_rate"] == "0.0001"
    assert run.data.metrics["eval/rewards/accuracies"] > 0.7  # the demo preference is learnable

    checkpoint = run.data.tags["prefsweep.checkpoint"]
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids = tokenizer("Hello", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == len(tokenizer)
