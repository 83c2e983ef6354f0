"""`prefsweep train` end to end (real Ray, the CLI, MLflow) against TRL 1.16's DPOTrainer: after the
same optimizer steps on the same rows, the eval metrics our run logs equal TRL's `evaluate()`.

Few cases, each covering much: TRL sums a loss_type list, so one run whose objective is every
loss type at once checks all of their gradients and values together (one differing term moves the
weights and every metric), and the others add each f-divergence, WPO, LD-DPO and TR-DPO's soft and
hard sync. Eight demo pairs make one batch per step on both sides (so row order cannot matter),
AdamW with the same defaults, a linear schedule without warm-up, gradient clipping at 1.0, float32.
"""
from __future__ import annotations

import copy

import pytest
import torch
import yaml
from helpers import runs_by_kind

pytestmark = pytest.mark.ray
trl = pytest.importorskip("trl")

ALL_TYPES = ["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
             "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]
ROWS, LEARNING_RATE = 8, 1e-3
METRICS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
           "logps/rejected"]

CASES = {  # TRL's DPOConfig settings (loss_type: our objective.name), steps
    "every-type-ld": (dict(loss_type=ALL_TYPES, loss_weights=[0.5 + i / 10 for i in range(len(ALL_TYPES))], beta=0.1,
                           label_smoothing=1e-3, ld_alpha=0.6), 2),
    # TRL 1.16's WPO multiplies each loss in place, which fails for sft (an expanded scalar) and in the backward
    # pass of hinge (a relu output): the f-divergence set without those two.
    "alpha-wpo-soft-sync": (dict(loss_type=["sigmoid", "sigmoid_norm", "ipo", "exo_pair", "robust", "discopop"],
                                 beta=0.2, label_smoothing=0.05, f_divergence_type="alpha_divergence",
                                 f_alpha_divergence_coef=0.3, use_weighting=True, sync_ref_model=True,
                                 ref_model_mixup_alpha=0.5, ref_model_sync_steps=1), 2),
    "forward-kl-rpo-hard-sync": (dict(loss_type=["sigmoid", "sigmoid_norm", "sft"], loss_weights=[0.8, 0.5, 1.0], beta=0.1,
                                      f_divergence_type="forward_kl", sync_ref_model=True, ref_model_mixup_alpha=1.0,
                                      ref_model_sync_steps=2), 3),
    "js-ld": (dict(loss_type=["robust", "discopop", "ipo", "hinge"], beta=0.3, label_smoothing=0.1,
                   f_divergence_type="js_divergence", ld_alpha=0.3), 2),
}


def our_config(storage, settings: dict, steps: int) -> dict:
    objective = {k: v for k, v in settings.items() if k != "loss_type"}
    objective["name"] = settings["loss_type"]
    return {
        "name": "parity", "model": {"name_or_path": "builtin:tiny-gpt2"},
        "data": {"train": {"path": "builtin:demo/train", "limit": ROWS}, "eval": {"path": "builtin:demo/eval",
                 "limit": ROWS}, "format": "paired", "max_length": 512, "max_prompt_length": 256},
        "objective": objective,
        "train": {"learning_rate": LEARNING_RATE, "per_device_batch_size": ROWS, "eval_batch_size": ROWS,
                  "max_steps": steps, "eval_every": steps, "logging_steps": steps, "warmup_steps": 0,
                  "max_grad_norm": 1.0, "weight_decay": 0.0, "reference_cache": False},
        "sweep": {"metric": {"name": "eval/loss", "goal": "minimize"}, "parameters": {}},
        "storage": {"path": str(storage)},
    }


def trl_evaluate(config: dict, settings: dict, steps: int, output_dir) -> dict[str, float]:
    """TRL trained on the same rows for the same steps, then its own evaluate()."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sweep.config.schema import PrefsweepConfig
    from sweep.data.loading import load_preference_data
    from sweep.models.builtin import builtin_path

    cfg = PrefsweepConfig.model_validate(config)
    data = load_preference_data(cfg.data, paired=True, seed=cfg.train.seed)
    rows = lambda pairs: Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}  # noqa: E731
                                            for p in pairs])
    path = builtin_path("builtin:tiny-gpt2")
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = trl.DPOConfig(
        output_dir=str(output_dir), report_to="none", use_cpu=True, bf16=False, fp16=False, save_strategy="no",
        logging_strategy="no", eval_strategy="no", train_sampling_strategy="sequential", max_length=None,
        per_device_train_batch_size=ROWS, per_device_eval_batch_size=ROWS, max_steps=steps,
        learning_rate=LEARNING_RATE, lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0,
        **settings,
    )
    trainer = trl.DPOTrainer(model=policy, ref_model=copy.deepcopy(policy), args=args, train_dataset=rows(data.train),
                             eval_dataset=rows(data.eval), processing_class=AutoTokenizer.from_pretrained(path))
    trainer.train()
    metrics = trainer.evaluate()
    return {name: metrics[f"eval_{name}"] for name in METRICS}


@pytest.mark.parametrize("case", list(CASES))
def test_train_eval_metrics_equal_trl_evaluate(case, cli, tmp_path):
    settings, steps = CASES[case]
    storage = tmp_path / "runs"
    config = our_config(storage, settings, steps)
    path = tmp_path / "parity.yaml"
    path.write_text(yaml.safe_dump(config))
    cli("train", str(path))
    (run,) = runs_by_kind(storage, "train")
    ours = {name: run.data.metrics[f"eval/{name}"] for name in METRICS}

    theirs = trl_evaluate(config, settings, steps, tmp_path / "trl")
    assert abs(ours["rewards/margins"]) > 1e-4, ours  # the reference and the policy differ at evaluation
    for name in METRICS:
        assert ours[name] == pytest.approx(theirs[name], rel=1e-4, abs=1e-5), (name, ours, theirs)
