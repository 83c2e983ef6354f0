"""Each judge kind: scores one finite number per completion, or fails with a JudgeError that
names it."""
from __future__ import annotations

import pytest

from sweep.config.evaluation import JudgeConfig
from sweep.evaluation.judges import JudgeError, load_judge
from sweep.models.builtin import builtin_path

PROMPT = "User: Could you help me with painting, please?\nAssistant:"
GOOD = " Happy to help! Painting takes practice. Good luck!"
BAD = " Go away. Painting is a waste of time. Leave me alone."


def test_the_demo_judge_prefers_the_demo_preference():
    judge = load_judge(JudgeConfig(builtin="demo"))
    good, bad = judge.score([PROMPT, PROMPT], [GOOD, BAD])
    assert good == 1.0 and bad < 0.5 and judge.label == "builtin:demo"


def test_a_python_judge_is_called_in_batches():
    judge = load_judge(JudgeConfig(python="judge_examples:length_bonus", batch_size=2))
    assert judge.score([PROMPT] * 3, ["one", "one two three four five", ""]) == [0.1, 0.5, 0.0]


@pytest.mark.parametrize("name, message", [
    ("broken", "judge python:judge_examples:broken raised KeyError: 'no score for you'"),
    ("too_few", "returned 1 scores for 2 completions"),
    ("not_finite", "returned nan for completion 0: scores must be finite"),
])
def test_a_broken_python_judge_names_itself(name, message):
    judge = load_judge(JudgeConfig(python=f"judge_examples:{name}"))
    with pytest.raises(JudgeError) as err:
        judge.score([PROMPT, PROMPT], [GOOD, BAD])
    assert message in str(err.value)


def test_a_python_judge_that_cannot_be_found_says_what_is_missing():
    with pytest.raises(JudgeError, match="cannot import 'no_such_module'.*importable where trials run"):
        load_judge(JudgeConfig(python="no_such_module:score"))
    with pytest.raises(JudgeError, match="'judge_examples' has no function 'not_callable'"):
        load_judge(JudgeConfig(python="judge_examples:not_callable"))


def _reward_model(tmp_path, num_labels: int):
    """A small GPT-2 sequence classifier built here with the built-in tokenizer, saved in HF layout."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(builtin_path("builtin:tiny-gpt2"))
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2,
                                                     n_positions=128, num_labels=num_labels,
                                                     pad_token_id=tokenizer.pad_token_id))
    path = tmp_path / f"rm-{num_labels}"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, tokenizer


def test_a_reward_model_judge_scores_with_its_logit(tmp_path):
    import torch

    path, model, tokenizer = _reward_model(tmp_path, 1)
    judge = load_judge(JudgeConfig(reward_model=str(path), batch_size=2, max_length=64))
    scores = judge.score([PROMPT] * 3, [GOOD, BAD, " ok"])
    assert len(scores) == 3 and len(set(scores)) == 3  # three texts, three different scores
    with torch.no_grad():  # the same as the model's own logit on the text pair
        one = tokenizer([PROMPT], [BAD], return_tensors="pt")
        assert scores[1] == pytest.approx(model.eval()(**one).logits[0, 0].item(), abs=1e-5)


def test_a_classifier_with_two_labels_is_not_a_reward_model(tmp_path):
    path, _, _ = _reward_model(tmp_path, 2)
    with pytest.raises(JudgeError, match="has 2 labels; a reward model has one"):
        load_judge(JudgeConfig(reward_model=str(path)))
    with pytest.raises(JudgeError, match="cannot load it"):
        load_judge(JudgeConfig(reward_model=str(tmp_path / "nothing-here")))


def test_what_is_checked_before_a_study_starts():
    from sweep.config.loading import ConfigError
    from sweep.config.schema import PrefsweepConfig
    from sweep.data.loading import PreferenceData
    from sweep.study.scoring import check_evaluation

    no_eval = PreferenceData(train=[], eval=[], format="paired", paired=True, dropped=0)
    with pytest.raises(ConfigError, match="evaluation: the eval split is empty"):
        check_evaluation(PrefsweepConfig(evaluation={}), no_eval)
    with pytest.raises(JudgeError, match="cannot import 'nowhere'"):
        check_evaluation(PrefsweepConfig(evaluation={"judge": {"python": "nowhere:f"}}))
    check_evaluation(PrefsweepConfig(), no_eval)  # no evaluation section: nothing to check
