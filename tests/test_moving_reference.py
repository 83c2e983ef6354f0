"""Moving references on the real worker loop (tests/worker_harness.py): TR-DPO's soft and hard
sync every N steps and PMPO's EMA move the reference exactly as specified, read back from the
checkpoints the loop writes (the policy's HF weights, the reference's weights in its training
state), a resumed run continues from the reference it had, and evaluation scores against the
moved reference. Plus the step-0 check: a reference that is not the policy's fails the run with a
message that says what it compared."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from worker_harness import one_thread, reference_logps, run_worker, tiny_config, tiny_data  # noqa: F401 (fixture)

from sweep.engine.checkpoints import STATE_FILE
from sweep.engine.moving_reference import STATE_KEY
from sweep.models.builtin import builtin_path

pytestmark = pytest.mark.usefixtures("one_thread")

EVERY_STEP = {"max_steps": 4, "eval_every": 1, "logging_steps": 1}


def policy_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return dict(AutoModelForCausalLM.from_pretrained(checkpoint).named_parameters())


def reference_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=False)[STATE_KEY]


def initial_weights() -> dict[str, torch.Tensor]:
    return dict(AutoModelForCausalLM.from_pretrained(builtin_path(tiny_config().model.name_or_path)).named_parameters())


def assert_weights(actual: dict, expected: dict) -> None:
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value.detach(), rtol=0, atol=2e-6, msg=name)


def mix(reference: dict, policy: dict, alpha: float) -> dict:
    return {name: (1 - alpha) * value.detach() + alpha * policy[name].detach() for name, value in reference.items()}


@pytest.mark.parametrize("alpha", [0.5, 1.0], ids=["soft", "hard"])
def test_tr_dpo_syncs_every_n_steps(alpha, monkeypatch, tmp_path):
    cfg = tiny_config(objective={"name": "sigmoid", "sync_ref_model": True, "ref_model_mixup_alpha": alpha,
                                 "ref_model_sync_steps": 2}, train=EVERY_STEP)
    reports = run_worker(cfg, tiny_data(), monkeypatch, tmp_path)
    assert [r["step"] for r in reports] == [1, 2, 3, 4]
    refs = [reference_weights(r["_checkpoint"]) for r in reports]
    policies = [policy_weights(r["_checkpoint"]) for r in reports]
    start = initial_weights()
    assert_weights(refs[0], start)  # step 1: no sync yet
    after_2 = mix(start, policies[1], alpha)
    assert_weights(refs[1], after_2)  # step 2: synced with the policy of step 2
    assert_weights(refs[2], after_2)  # step 3: unchanged
    assert_weights(refs[3], mix(after_2, policies[3], alpha))
    if alpha == 1.0:  # a hard sync at the last step: evaluation compares the policy with itself
        assert reports[-1]["eval/rewards/margins"] == pytest.approx(0.0, abs=1e-6)
        assert reports[-1]["eval/loss"] == pytest.approx(math.log(2.0), abs=1e-6)
    assert reports[0]["eval/rewards/margins"] != pytest.approx(0.0, abs=1e-6)


def test_pmpo_ema_reference_follows_the_policy_every_step(monkeypatch, tmp_path):
    tau = 0.3
    cfg = tiny_config(objective={"name": "pmpo", "ema_tau": tau, "beta": 0.2}, train=EVERY_STEP)
    reports = run_worker(cfg, tiny_data(), monkeypatch, tmp_path)
    expected = initial_weights()
    for report in reports:
        expected = mix(expected, policy_weights(report["_checkpoint"]), tau)
        assert_weights(reference_weights(report["_checkpoint"]), expected)


def test_a_resumed_run_continues_from_the_reference_it_had(monkeypatch, tmp_path):
    cfg = tiny_config(objective={"name": "dpo", "sync_ref_model": True, "ref_model_mixup_alpha": 0.4,
                                 "ref_model_sync_steps": 1}, train={"max_steps": 4, "eval_every": 2, "logging_steps": 2})
    data = tiny_data()
    whole = run_worker(cfg, data, monkeypatch, tmp_path / "whole")
    halfway = whole[0]["_checkpoint"]
    monkeypatch.setattr("ray.train.get_checkpoint", lambda: __import__("ray").train.Checkpoint.from_directory(str(halfway)))
    resumed = run_worker(cfg, data, monkeypatch, tmp_path / "resumed")
    assert resumed[-1]["resumed_from_step"] == 2 and resumed[-1]["step"] == 4
    assert_weights(reference_weights(resumed[-1]["_checkpoint"]), reference_weights(whole[-1]["_checkpoint"]))
    assert resumed[-1]["eval/loss"] == pytest.approx(whole[-1]["eval/loss"], rel=1e-5)


def test_a_frozen_reference_keeps_no_weights_in_the_checkpoint(monkeypatch, tmp_path):
    (report,) = run_worker(tiny_config(train={"max_steps": 2, "eval_every": 2}), tiny_data(), monkeypatch, tmp_path)
    assert STATE_KEY not in torch.load(report["_checkpoint"] / STATE_FILE, weights_only=False)


# --- the step-0 check ----------------------------------------------------------------------------


def test_a_reference_that_is_not_the_policys_fails_at_step_0(monkeypatch, tmp_path):
    cfg, data = tiny_config(objective={"name": "sigmoid_norm", "beta": 2.0}), tiny_data()
    cache = reference_logps(cfg, data)
    shifted = {split: tensor + torch.tensor([0.0, 3.0]) for split, tensor in cache.items()}  # rejected rows off by 3 nats
    with pytest.raises(Exception, match="step-0 check failed") as failed:
        run_worker(cfg, data, monkeypatch, tmp_path / "bad", ref_cache=shifted)
    message = str(failed.value)
    assert "the policy starts as its reference (builtin:tiny-gpt2-sft)" in message
    assert "sigmoid_norm loss of the first batch must be 0.693147 (ln 2)" in message
    assert "the study's cached reference log-probs" in message
    # The same entry, untouched, passes: every run of this suite goes through the check.
    assert run_worker(cfg, data, monkeypatch, tmp_path / "good", ref_cache=cache)


def test_the_check_uses_each_objectives_own_value_and_skips_where_unknown(monkeypatch, tmp_path):
    data = tiny_data()
    objectives = ({"name": "hinge", "beta": 0.5}, {"name": ["sigmoid", "bco_pair"], "loss_weights": [1.0, 0.5]},
                  {"name": "simpo"}, {"name": ["sigmoid", "sft"]})
    for number, objective in enumerate(objectives):
        where = tmp_path / str(number)
        cfg = tiny_config(objective=objective, train={"max_steps": 1, "eval_every": 1})
        cache = reference_logps(cfg, data) if cfg.objective.resolved().needs_reference else None
        bad = None if cache is None else {split: tensor - 2.0 for split, tensor in cache.items()}
        expected = cfg.objective.resolved().loss_at_reference(cfg.objective)
        if expected is None:  # simpo: no reference; sigmoid + sft: the SFT term depends on the batch
            assert run_worker(cfg, data, monkeypatch, where, ref_cache=bad)
            continue
        # Both rows of every pair off by the same amount: the margin stays 0, so only losses that
        # read each completion's own log-ratio (bco_pair) notice; hinge's margin does not move.
        if "bco_pair" in str(objective):
            with pytest.raises(Exception, match=f"must be {expected:.6f}"):
                run_worker(cfg, data, monkeypatch, where, ref_cache=bad)
        else:
            assert run_worker(cfg, data, monkeypatch, where, ref_cache=bad)


def test_a_moving_reference_needs_full_fine_tuning():
    with pytest.raises(ValueError, match="the reference moves .TR-DPO hard sync every 4 steps.*model.lora is set"):
        tiny_config(model={"lora": {"r": 4}}, objective={"name": "dpo", "sync_ref_model": True,
                                                          "ref_model_mixup_alpha": 1.0, "ref_model_sync_steps": 4})
