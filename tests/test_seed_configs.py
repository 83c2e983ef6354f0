"""Each seed config in configs/ validates with its model and data swapped for offline ones
that keep the seed's column layout (so renames and format detection are exercised too)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from sweep.config.loading import load_config
from sweep.study.validate import validate

PAIRS = [("Human: how do I bake bread?\n\nAssistant:", " Mix flour, water and yeast.", " No."),
         ("Human: name a planet\n\nAssistant:", " Mars is a planet.", " Bread."),
         ("Human: what is 2+2?\n\nAssistant:", " 4.", " 5."),
         ("Human: say hi\n\nAssistant:", " Hi there!", " Go away.")]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def static_hh_rows() -> list[dict]:  # Dahoas/static-hh and full-hh-rlhf
    return [{"prompt": p, "response": c, "chosen": c, "rejected": r} for p, c, r in PAIRS]


def rm_single_context_rows() -> list[dict]:
    return [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]


def orca_rows() -> list[dict]:  # argilla/distilabel-intel-orca-dpo-pairs
    return [{"system": "", "input": p, "chosen": c, "rejected": r, "status": "tie"} for p, c, r in PAIRS * 3]


SEEDS = {
    "dpo-gpt2-static-hh.yaml": static_hh_rows,
    "dpo-gpt2-full-hh.yaml": static_hh_rows,
    "dpo-gpt2-rm-single-context.yaml": rm_single_context_rows,
    "orca-pairs-sweep.yaml": orca_rows,
}


def offline(name: str, tmp_path: Path) -> dict:
    raw = yaml.safe_load(Path("configs", name).read_text())
    raw["model"]["name_or_path"] = "builtin:tiny-gpt2"
    raw["storage"] = {"path": str(tmp_path / "runs")}
    return raw


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_paired_seed_configs_validate_offline(name, tmp_path):
    raw = offline(name, tmp_path)
    rows = SEEDS[name]()
    raw["data"]["train"] = {"path": write_jsonl(tmp_path / "train.jsonl", rows)}
    if raw["data"].get("eval") is not None:
        raw["data"]["eval"] = {"path": write_jsonl(tmp_path / "eval.jsonl", rows)}
    report = validate(load_config(raw))
    assert report["format"] == "paired"
    assert report["train_rows"] >= len(PAIRS) - 1


def test_pmpo_seed_config_validates_on_labelled_csv(tmp_path):
    raw = offline("pmpo-lmsys.yaml", tmp_path)
    for split in ("train", "eval"):
        path = tmp_path / f"{split}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["prompt", "response", "label"])
            writer.writeheader()
            for prompt, chosen, rejected in PAIRS:
                writer.writerow({"prompt": prompt, "response": chosen, "label": "accept"})
                writer.writerow({"prompt": prompt, "response": rejected, "label": "reject"})
        raw["data"][split] = {"path": str(path)}
    report = validate(load_config(raw))
    assert report["format"] == "unpaired" and report["train_rows"] == 2 * len(PAIRS)


def test_orca_sweep_keeps_the_seed_search_space():
    cfg = load_config("configs/orca-pairs-sweep.yaml")
    params = cfg.sweep.parameters
    assert params["train.learning_rate"].min == 1e-6 and params["train.learning_rate"].max == 1e-3
    assert params["train.per_device_batch_size"].values == [2, 4, 8]
    assert params["train.gradient_accumulation_steps"].values == [1, 2, 4]
    assert params["train.max_steps"].values == [100, 200, 500]
    assert params["objective.beta"].values == [0.01, 0.1, 0.2, 0.5]
    assert cfg.sweep.metric.name == "eval/rewards/accuracies"


def test_full_hh_seed_hyperparameters():
    cfg = load_config("configs/dpo-gpt2-full-hh.yaml")
    assert (cfg.train.learning_rate, cfg.train.per_device_batch_size, cfg.train.gradient_accumulation_steps,
            cfg.train.max_steps, cfg.objective.beta) == (5e-5, 8, 2, 1000, 0.1)
    assert cfg.data.max_prompt_length == 128 and cfg.data.max_length == 256
