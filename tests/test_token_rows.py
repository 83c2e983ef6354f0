"""Tokenize once per study (sweep.data.token_rows, sweep.study.shared_tokens): packed rows read
back exactly as the tokenizer made them, their key changes with what tokenization depends on
and nothing else, a sweep knows when its trials need their own, and training on the study's
tokenization equals training on rows the worker tokenized itself."""
from __future__ import annotations

import pickle

import pytest
from worker_harness import one_thread, run_worker, tiny_config, tiny_data  # noqa: F401 (fixture)

from sweep.data.loading import unpair
from sweep.data.token_rows import TokenRows, tokenize_rows
from sweep.data.tokenize import TokenizedCompletion, TokenizedPair, tokenize_completions, tokenize_pairs
from sweep.engine.length_sampler import item_length, lengths_of
from sweep.models.loading import load_tokenizer
from sweep.study.shared_tokens import tokenization_swept

pytestmark = pytest.mark.usefixtures("one_thread")


def test_packed_rows_read_back_as_tokenized_with_their_lengths():
    tokenizer, data = load_tokenizer("builtin:tiny-gpt2"), tiny_data()
    pairs = tokenize_pairs(data.train, tokenizer, max_length=48, max_prompt_length=16)
    rows = tokenize_completions(unpair(data.train), tokenizer, max_length=48, max_prompt_length=16)
    for items, paired in ((pairs, True), (rows, False)):
        packed = pickle.loads(pickle.dumps(TokenRows.pack(items, paired)))  # as the object store carries it
        assert list(packed) == items and len(packed) == len(items)
        assert isinstance(packed[0], TokenizedPair if paired else TokenizedCompletion)
        assert packed[-1] == items[-1]
        assert lengths_of(packed) == [item_length(item) for item in items] == lengths_of(items)
        with pytest.raises(IndexError):
            packed[len(items)]
    empty = TokenRows.pack([], True)
    assert len(empty) == 0 and lengths_of(empty) == []


def test_the_key_follows_what_tokenization_depends_on():
    data = tiny_data()
    key = lambda cfg, d=data: tokenize_rows(cfg, d).key  # noqa: E731
    base = key(tiny_config())
    same = [tiny_config(objective={"beta": 0.5}), tiny_config(objective={"name": "ipo"}),
            tiny_config(train={"learning_rate": 1e-5}), tiny_config(model={"dtype": "bfloat16"})]
    assert {key(cfg) for cfg in same} == {base}
    other = [tiny_config(data={"max_length": 40}), tiny_config(data={"max_prompt_length": 8}),
             tiny_config(objective={"name": "kto"}), tiny_config(model={"name_or_path": "builtin:tiny-gpt2"})]
    keys = {key(cfg) for cfg in other} | {key(tiny_config(), tiny_data(seed=1))}
    assert base not in keys and len(keys) == len(other) + 1


def test_a_sweep_knows_when_trials_need_their_own_tokenization():
    swept = lambda key, values: tiny_config(sweep={"parameters": {key: {"values": values}}})  # noqa: E731
    assert not tokenization_swept(swept("objective.beta", [0.1, 0.2]))
    assert not tokenization_swept(swept("train.learning_rate", [1e-4, 1e-3]))
    assert tokenization_swept(swept("data.max_length", [32, 48]))
    assert tokenization_swept(swept("objective.name", ["dpo", "kto"]))


@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_training_on_the_studys_tokenization_equals_tokenizing_in_the_worker(objective, monkeypatch, tmp_path):
    cfg = tiny_config(objective={"name": objective}, train={"max_steps": 3, "eval_every": 3, "logging_steps": 3})
    data = tiny_data()
    own = run_worker(cfg, data, monkeypatch, tmp_path / "own")
    shared = run_worker(cfg, None, monkeypatch, tmp_path / "shared", tokens=tokenize_rows(cfg, data))
    names = [k for k in own[-1] if k.startswith(("loss", "rewards/", "logps/", "eval/"))]
    assert "eval/loss" in names
    for name in names:
        assert shared[-1][name] == pytest.approx(own[-1][name], rel=1e-6, abs=1e-7), name
