"""LoRA trials (`model.lora`) through the real worker loop: the reference is the base model
with the adapters switched off (no second copy), or no model at all with the reference
cache; export merges the adapter or saves it alone, and both reload with from_pretrained /
PeftModel to the trained model's outputs."""
from __future__ import annotations

import pytest
import torch
from worker_harness import cache_entry, one_thread, run_worker, tiny_config, tiny_data  # noqa: F401 (fixture)

from objectives.registry import get_objective
from sweep.engine.policy import build_policy_and_reference
from sweep.models.loading import load_causal_lm
from sweep.study.export import export_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def lora_config(**lora):
    # A high learning rate: the adapter must move the outputs visibly in three steps.
    return tiny_config(model={"lora": {**LORA, **lora}},
                       train={"max_steps": 3, "eval_every": 3, "logging_steps": 3, "learning_rate": 5e-2})


def test_reference_is_the_adapter_free_base_or_the_cache():
    cfg = lora_config()
    policy, reference = build_policy_and_reference(cfg, get_objective("dpo"), "cpu", None)
    assert reference.model is None and reference.adapter_host is policy  # no second model in memory
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    _, cached = build_policy_and_reference(cfg, get_objective("dpo"), "cpu", None, cached_ref=torch.zeros(4, 2))
    assert cached.model is None and cached.adapter_host is None and cached.cached is not None


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One LoRA run (cache off) -> (its last checkpoint dir, reports, the config)."""
    mp = pytest.MonkeyPatch()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg, data = lora_config(), tiny_data()
        reports = run_worker(cfg, data, mp, tmp_path_factory.mktemp("lora"))
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    return reports[-1]["_checkpoint"], reports, cfg


def test_lora_run_checkpoints_an_adapter(trained):
    checkpoint, reports, _ = trained
    assert (checkpoint / "adapter_config.json").is_file() and (checkpoint / "adapter_model.safetensors").is_file()
    assert reports[-1]["step"] == 3 and reports[-1]["rewards/margins"] != 0.0


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "adapter-only"])
def test_export_reloads_to_the_trained_model(trained, merge, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint, reports, cfg = trained
    cfg = lora_config(merge_on_export=merge)
    out = export_checkpoint(str(checkpoint), tmp_path / "export", cfg, {"eval/loss": reports[-1]["eval/loss"]})
    ids = AutoTokenizer.from_pretrained(out)("the cat likes tea", return_tensors="pt")["input_ids"]
    expected = logits(PeftModel.from_pretrained(load_causal_lm(cfg.model.name_or_path), str(checkpoint)), ids)
    base = logits(load_causal_lm(cfg.model.name_or_path), ids)
    if merge:
        assert not (out / "adapter_config.json").exists()
        reloaded = AutoModelForCausalLM.from_pretrained(out)
    else:
        assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
        reloaded = PeftModel.from_pretrained(load_causal_lm(cfg.model.name_or_path), str(out))
    got = logits(reloaded, ids)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got - base).abs().max() > 1e-3  # the adapter is in there
    assert "README.md" in {p.name for p in out.iterdir()}


def test_lora_with_the_cache_equals_lora_without(trained, monkeypatch, tmp_path):
    """The cache holds the base model's log-probs: exactly what the adapter-free reference gives."""
    _, live, cfg = trained
    data = tiny_data()
    entry, _, _ = cache_entry(cfg, data, tmp_path)
    cached = run_worker(cfg, data, monkeypatch, tmp_path, ref_cache=entry)
    for name in ("loss", "rewards/margins", "eval/loss", "eval/rewards/margins"):
        assert cached[-1][name] == pytest.approx(live[-1][name], rel=1e-4, abs=1e-5), name
