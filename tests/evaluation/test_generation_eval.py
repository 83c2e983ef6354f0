"""eval/gen/* on real models: the measures mean what they say."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sweep.config.schema import PrefsweepConfig
from sweep.data.formats import PreferencePair
from sweep.evaluation.scorer import ScorerClient
from sweep.evaluation.worker import GenerationEval
from sweep.models.loading import load_causal_lm, load_tokenizer

DEMO_EVAL = Path(__file__).resolve().parents[2] / "sweep" / "data" / "demo" / "eval.jsonl"
SFT = "builtin:tiny-gpt2-sft"


def demo_rows() -> list[PreferencePair]:
    return [PreferencePair(**json.loads(line)) for line in DEMO_EVAL.read_text().splitlines()]


def config(**evaluation) -> PrefsweepConfig:
    return PrefsweepConfig.model_validate({
        "model": {"name_or_path": SFT}, "data": {"max_length": 128, "max_prompt_length": 64},
        "evaluation": {"prompts": 24, "max_new_tokens": 24, "temperature": 1.0, "judge": "builtin:demo",
                       "batch_size": 8, **evaluation}})


def evaluate(cfg: PrefsweepConfig, policy, tmp_path=None):
    tokenizer = load_tokenizer(SFT)
    scorer = ScorerClient(cfg.model_dump(mode="json"), None, str(tmp_path) if tmp_path else None)
    return GenerationEval(cfg, demo_rows(), tokenizer, scorer, rank=0, world=1).run(policy, "cpu")


def drifted(scale: float):
    torch.manual_seed(1)
    model = load_causal_lm(SFT)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale * p.std().clamp(min=1e-3))
    return model


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_reference_against_itself_has_zero_kl_and_wins_half(tmp_path):
    metrics, rows = evaluate(config(), load_causal_lm(SFT), tmp_path)
    assert metrics["eval/gen/kl"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["eval/gen/win_rate"] == 0.5  # the same samples (same seeds): every prompt a tie
    assert metrics["eval/gen/length_ratio"] == pytest.approx(1.0)
    assert metrics["eval/gen/reward"] == metrics["eval/gen/ref_reward"]
    assert len(rows) == 24 and all(r["completion"] == r["reference"] for r in rows)
    assert 0.0 < metrics["eval/gen/eos_rate"] <= 1.0 and metrics["eval/gen/length"] > 3
    # The reference's completions were kept under the study dir: computed once per study.
    assert len(list((tmp_path / "evaluation").glob("reference-*.json"))) == 1


def test_kl_grows_as_the_policy_drifts_from_its_reference():
    kls = [evaluate(config(), drifted(scale))[0]["eval/gen/kl"] for scale in (0.0, 0.3, 0.6)]
    assert kls[0] == pytest.approx(0.0, abs=1e-5)
    assert 0.0 < kls[1] < kls[2], kls  # 24 samples: a smaller drift is within the estimate's noise


def test_greedy_evaluation_is_deterministic_and_judged():
    cfg = config(temperature=0.0, prompts=8)
    first, second = evaluate(cfg, drifted(0.05)), evaluate(cfg, drifted(0.05))
    assert first[0] == second[0]
    assert 0.0 <= first[0]["eval/gen/win_rate"] <= 1.0 and first[0]["eval/gen/ref_reward"] > 0.8
