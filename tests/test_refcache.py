"""The study-wide reference cache (sweep.study.reference_cache): when it applies, what its key covers,
that a bad entry is never trusted, one pass per entry, and that training from it gives the
numbers a live reference gives."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from worker_harness import cache_entry, one_thread, reference_logps, run_worker, tiny_config, tiny_data  # noqa: F401

from sweep.data.loading import unpair
from sweep.engine import reference as engine_reference
from sweep.storage import fingerprint as reffingerprint
from sweep.storage import reference_store
from sweep.study import reference_cache as refcache

pytestmark = pytest.mark.usefixtures("one_thread")


def test_decision_per_objective():
    on = lambda **objective: refcache.cache_decision(tiny_config(objective=objective))[0]  # noqa: E731
    assert on(name="dpo") and on(name="ipo") and on(name="kto") and on(name="pmpo", kl_estimator="sample")
    assert not on(name="simpo") and not on(name="orpo") and not on(name="pmpo", kl_estimator="exact")
    assert not refcache.cache_decision(tiny_config(train={"reference_cache": False}))[0]


def test_key_covers_every_input(tmp_path):
    data = tiny_data()
    key = lambda cfg, d=data: reffingerprint.fingerprint(cfg, reffingerprint.data_digest(d))[0]  # noqa: E731
    base = key(tiny_config())
    assert base == key(tiny_config())  # deterministic
    assert base == key(tiny_config(objective={"beta": 0.5}, train={"learning_rate": 1e-5}))  # not inputs
    changed_row = dataclasses.replace(data, train=[dataclasses.replace(data.train[0], chosen=" other")] + data.train[1:])
    variants = [
        tiny_config(data={"max_length": 40}),
        tiny_config(data={"max_prompt_length": 8}),
        tiny_config(model={"dtype": "bfloat16"}),
        tiny_config(objective={"name": "kto"}),  # unpaired rows
        tiny_config(resources={"use_gpu": True}),
    ]
    keys = {key(cfg) for cfg in variants} | {key(tiny_config(), changed_row)}
    assert base not in keys and len(keys) == len(variants) + 1
    # A local model directory is identified by its content.
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    first = reffingerprint.model_identity(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text('{"n_layer": 3}')
    assert reffingerprint.model_identity(str(tmp_path / "m")) != first


def test_one_pass_then_reuse_and_bad_entries_are_recomputed(tmp_path):
    cfg, data, study = tiny_config(), tiny_data(), str(tmp_path / "study")
    entry, note, computed = cache_entry(cfg, data, tmp_path)
    assert computed and note.startswith("on:") and reference_store.count_passes(study) == 1
    assert entry == str(tmp_path / "refcache" / note.removeprefix("on: "))  # under the storage, not the study
    tensors = reference_store.load_entry(entry)
    assert tensors["train"].shape == (24, 2) and tensors["eval"].shape == (8, 2)
    for _ in range(3):  # every further trial reuses it
        assert cache_entry(cfg, data, tmp_path)[2] is False
    assert reference_store.count_passes(study) == 1

    manifest = json.loads((tmp_path / "refcache" / entry.rsplit("/", 1)[1] / "manifest.json").read_text())
    tensor_file = tmp_path / "refcache" / manifest["key"] / manifest["file"]
    tensor_file.write_bytes(tensor_file.read_bytes()[:-8] + b"\0" * 8)  # corrupt: checksum fails
    with pytest.raises(reference_store.CacheInvalid, match="checksum"):
        reference_store.load_entry(entry)
    assert cache_entry(cfg, data, tmp_path)[2] is True and reference_store.count_passes(study) == 2

    (tmp_path / "refcache" / manifest["key"] / "manifest.json").unlink()  # partial write
    assert cache_entry(cfg, data, tmp_path)[2] is True
    with pytest.raises(reference_store.CacheInvalid, match="other inputs"):
        reference_store.load_entry(entry, key="0" * 32)

    other = tiny_config(data={"max_length": 40})  # a swept max_length gets its own entry
    other_entry, _, computed = cache_entry(other, data, tmp_path)
    assert computed and other_entry != entry and reference_store.count_passes(study) == 4
    assert cache_entry(cfg, data, tmp_path)[2] is False  # the first entry is intact


def test_a_later_study_with_the_same_inputs_runs_no_pass_and_entries_are_listed_and_removed(tmp_path):
    cfg, data = tiny_config(), tiny_data()
    entry, _, computed = cache_entry(cfg, data, tmp_path, "first")
    assert computed
    entry_again, _, computed = cache_entry(cfg.model_copy(update={"name": "second"}), data, tmp_path, "second")
    assert entry_again == entry and not computed
    assert reference_store.count_passes(str(tmp_path / "second")) == 0
    assert reference_store.count_passes(str(tmp_path / "first")) == 1
    cache_entry(tiny_config(data={"max_length": 40}), data, tmp_path, "first")
    listed = reference_store.list_entries(str(tmp_path))
    assert len(listed) == 2 and all(e["complete"] and e["bytes"] > 0 for e in listed)
    shared = next(e for e in listed if entry.endswith(e["key"]))
    assert shared["used_by"] == ["second", "unit"]  # the studies' names (tiny_config's is "unit")
    assert shared["rows"] == {"train": 24, "eval": 8} and shared["max_length"] == 48
    reference_store.remove_entry(str(tmp_path), shared["key"])
    assert [e["key"] for e in reference_store.list_entries(str(tmp_path))] == [listed[0]["key"] if listed[0] is not shared
                                                                               else listed[1]["key"]]
    for bad in ("../first", "refcache", "A" * 32):
        with pytest.raises(reference_store.CacheInvalid, match="not a cache key"):
            reference_store.remove_entry(str(tmp_path), bad)
    assert (tmp_path / "first").is_dir()


def test_row_count_mismatch_is_refused():
    cache = {"train": torch.zeros(5, 2), "eval": torch.zeros(2, 2)}
    with pytest.raises(reference_store.CacheInvalid, match="train rows"):
        engine_reference.cached_splits(cache, 6, 2, "cpu")
    train, eval_ = engine_reference.cached_splits(cache, 5, 2, "cpu")
    assert train.shape == (5, 2) and eval_.shape == (2, 2)


def test_cached_logps_equal_live_reference():
    """The pass computes exactly what a live reference computes, pairs and unpaired rows alike."""
    from sweep.data.tokenize import tokenized_splits
    from sweep.engine.collate import PairCollator
    from sweep.engine.reference import Reference
    from sweep.models.loading import load_causal_lm, load_tokenizer

    cfg, data = tiny_config(), tiny_data()
    cached = reference_logps(cfg, data)
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    train_items, _ = tokenized_splits(cfg.data, True, data, tokenizer)
    batch = PairCollator(tokenizer.pad_token_id)(list(enumerate(train_items))[3:9])
    live = Reference(model=load_causal_lm(cfg.model.name_or_path).eval()).logps(batch)
    from_cache = Reference(cached=cached["train"]).logps(batch)
    torch.testing.assert_close(from_cache, live, rtol=1e-5, atol=1e-4)
    unpaired = reference_logps(tiny_config(objective={"name": "kto"}), data)
    assert unpaired["train"].shape == (len(unpair(data.train)),)
    torch.testing.assert_close(unpaired["train"][0::2], cached["train"][:, 0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("objective", [{"name": "dpo"}, {"name": "kto"}], ids=["dpo", "kto"])
def test_training_with_the_cache_equals_training_without(objective, monkeypatch, tmp_path):
    """The real worker loop, same seed, live reference vs cache entry: same losses, rewards and
    eval metrics to float tolerance (kto: matched rows cached, KL rows live)."""
    cfg = tiny_config(objective=objective, train={"max_steps": 3, "eval_every": 3, "logging_steps": 3})
    data = tiny_data()
    entry, _, _ = cache_entry(cfg, data, tmp_path)
    live = run_worker(cfg, data, monkeypatch, tmp_path / "live")
    cached = run_worker(cfg, data, monkeypatch, tmp_path / "cached", ref_cache=entry)
    assert [r["step"] for r in live] == [r["step"] for r in cached] == [3]
    for a, b in zip(live, cached):
        names = [k for k in a if k.startswith(("loss", "rewards/", "logps/", "eval/", "kl"))]
        assert "eval/loss" in names and "rewards/margins" in names
        for name in names:
            assert b[name] == pytest.approx(a[name], rel=1e-4, abs=1e-5), name


def test_moving_references_step_aside_and_the_cached_trials_share_one_pass(tmp_path):
    """Trials of one sweep mixing objectives: the cached ones (dpo, sigmoid_norm, apo_zero, an MPO
    mixture) share one entry and one pass; TR-DPO, an EMA reference and LD-DPO stay live and say why."""
    data, study = tiny_data(), str(tmp_path / "study")
    cached = [{"name": "dpo"}, {"name": "sigmoid_norm", "beta": 2.0}, {"name": "apo_zero"},
              {"name": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]}]
    live = {"sync_ref_model": "moves during training (TR-DPO soft", "ema_tau": "moves during training (an EMA",
            "ld_alpha": "shared length"}
    entries = {cache_entry(tiny_config(objective=objective), data, tmp_path)[0] for objective in cached}
    assert len(entries) == 1 and None not in entries and reference_store.count_passes(study) == 1
    for setting, why in live.items():
        objective = {"name": "pmpo", "ema_tau": 0.1} if setting == "ema_tau" else {"name": "sigmoid", setting: (
            True if setting == "sync_ref_model" else 0.5)}
        entry, note, computed = cache_entry(tiny_config(objective=objective), data, tmp_path)
        assert entry is None and not computed and note.startswith("off: ") and why in note, note
    assert reference_store.count_passes(study) == 1
