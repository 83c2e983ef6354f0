"""The offline path: `builtin:tiny-gpt2` and the demo preference data it trains on."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sweep.models import builtin
from sweep.models.builtin import BUILTIN_MODELS, builtin_path, is_builtin

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "sweep" / "data" / "demo"
TINY = "builtin:tiny-gpt2"

# Digests of the reference build. A change here means every cached copy on every machine is
# now different from a fresh build: change the recipe on purpose (the cache dir name follows
# the recipe hash), never by accident, e.g. through a platform-dependent RNG.
WEIGHTS_SHA256 = "9c5de1611b0cbb330296112d55c1a37241b2184d19592414a966511f2cc176dc"
VOCAB_SHA256 = "e26c7e3bade149c30341d31ac2fb0c9d1441c37beda831ea0428b351e8bf04fe"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFSWEEP_CACHE", str(tmp_path_factory.mktemp("cache")))
        return builtin_path(TINY)


def _state_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _vocab_digest(tokenizer) -> str:
    return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()


def test_names():
    assert BUILTIN_MODELS == ("tiny-gpt2", "tiny-gpt2-sft")
    assert is_builtin(TINY) and not is_builtin("gpt2") and not is_builtin("/models/tiny")
    with pytest.raises(ValueError, match="unknown built-in model.*builtin:tiny-gpt2"):
        builtin_path("builtin:huge-gpt9")


def test_loads_with_auto_classes(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert tokenizer.is_fast
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.padding_side == "right"
    assert 1024 <= len(tokenizer) <= 4096
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    batch = tokenizer(["User: hi\nAssistant: hello", "short"], padding=True, return_tensors="pt")
    logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_same_build_in_fresh_cache_dirs(tmp_path, monkeypatch):
    built = []
    for name in ("a", "b"):
        monkeypatch.setenv("PREFSWEEP_CACHE", str(tmp_path / name))
        built.append(builtin_path(TINY))
    assert built[0] != built[1] and built[0].name == built[1].name
    first, second = (AutoModelForCausalLM.from_pretrained(d).state_dict() for d in built)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    for filename in ("tokenizer.json", "config.json", "model.safetensors"):
        assert (built[0] / filename).read_bytes() == (built[1] / filename).read_bytes()


def test_matches_reference_build(tiny_dir):
    assert _state_digest(AutoModelForCausalLM.from_pretrained(tiny_dir)) == WEIGHTS_SHA256
    assert _vocab_digest(AutoTokenizer.from_pretrained(tiny_dir)) == VOCAB_SHA256


def test_cache_dir_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFSWEEP_CACHE", str(tmp_path))
    first = builtin_path(TINY)
    monkeypatch.setattr(builtin, "_build_tiny_gpt2", lambda out: pytest.fail("rebuilt"))
    assert builtin_path(TINY) == first
    assert first.parent == tmp_path and f"v{builtin.RECIPE_VERSION}" in first.name


def test_tokenizer_round_trips(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    for text in (
        "User: How do I bake bread?\nAssistant: Sure! Mix flour, water and salt.",
        "  leading spaces, tabs\tand UTF-8: café, naïve, 日本語, 🙂",
        "",
    ):
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text
    # Trained on English: everyday words are single tokens, not bytes.
    assert len(tokenizer(" the kitchen garden and the weather")["input_ids"]) == 6
    assert tokenizer("hi<|endoftext|>")["input_ids"][-1] == tokenizer.eos_token_id


def test_chat_template(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    prompt = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Any tips on tea?"}]
    rendered = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert rendered == "System: Be kind.\nUser: Any tips on tea?\nAssistant:"
    full = tokenizer.apply_chat_template(
        prompt + [{"role": "assistant", "content": "Use fresh water."}], tokenize=False
    )
    # Preference pipelines split a conversation into prompt + completion by this prefix.
    assert full.startswith(rendered) and full[len(rendered):] == " Use fresh water.\n"
    with pytest.raises(Exception, match="roles must be"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_concurrent_builds_leave_one_valid_dir(tmp_path, monkeypatch):
    # Spawned children inherit the environment and import only sweep.models.builtin, so both
    # reach the build at about the same moment: the race Ray workers run on a fresh node.
    monkeypatch.setenv("PREFSWEEP_CACHE", str(tmp_path))
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=builtin_path, args=(TINY,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1, entries  # no leftover temp dirs
    AutoModelForCausalLM.from_pretrained(entries[0])
    AutoTokenizer.from_pretrained(entries[0])


# ---- demo data -------------------------------------------------------------------------

def _rows(split: str) -> list[dict]:
    with open(DEMO / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_demo_data_shape():
    train, evals = _rows("train"), _rows("eval")
    assert 300 <= len(train) <= 600 and 80 <= len(evals) <= 150
    for row in train + evals:
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert all(isinstance(v, str) and v.strip() for v in row.values())
        assert row["prompt"].endswith("\nAssistant:")
        assert row["chosen"].startswith(" ") and row["rejected"].startswith(" ")
        assert row["chosen"] != row["rejected"]
    assert (DEMO / "README.md").is_file()


def test_demo_splits_are_disjoint():
    train, evals = _rows("train"), _rows("eval")
    key = lambda r: (r["prompt"], r["chosen"], r["rejected"])  # noqa: E731
    assert len({key(r) for r in train}) == len(train)
    assert len({key(r) for r in evals}) == len(evals)
    assert not {key(r) for r in train} & {key(r) for r in evals}
    # Held out means new prompts, not just new pairings of seen ones.
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evals}


def test_demo_sequences_are_short(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    for row in _rows("train") + _rows("eval"):
        prompt = len(tokenizer(row["prompt"])["input_ids"])
        for completion in (row["chosen"], row["rejected"]):
            assert prompt + len(tokenizer(completion)["input_ids"]) + 1 <= 64


def test_demo_data_is_reproducible(tmp_path):
    spec = importlib.util.spec_from_file_location("make_demo_data", REPO / "scripts" / "make_demo_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--out", str(tmp_path)])
    for split in ("train", "eval"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (DEMO / f"{split}.jsonl").read_bytes()


def test_sft_identity_follows_its_recipe_and_base(monkeypatch):
    from sweep.models import sft_build

    sft = builtin.builtin_identity("builtin:tiny-gpt2-sft")
    assert sft.startswith("tiny-gpt2-sft-v") and sft == builtin.builtin_identity("builtin:tiny-gpt2-sft")
    assert sft != builtin.builtin_identity(TINY)
    monkeypatch.setitem(sft_build.SFT_RECIPE, "epochs", 13)
    assert builtin.builtin_identity("builtin:tiny-gpt2-sft") != sft


def test_the_sft_model_answers_in_the_demo_style_the_base_does_not():
    """What the evaluation work rests on: the SFT reference speaks the demo's language (greedy
    answers the demo judge scores high), so generations and win rates mean something, while
    the random-init base does not. Built once per machine into the shared cache (~40 s)."""
    from sweep.evaluation.demo_judge import DemoJudge

    rows = [json.loads(line) for line in (DEMO / "eval.jsonl").read_text().splitlines()[:16]]
    prompts = [r["prompt"] for r in rows]
    scores = {}
    for name in (TINY, "builtin:tiny-gpt2-sft"):
        path = builtin_path(name)
        tok = AutoTokenizer.from_pretrained(path, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        enc = tok(prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        scores[name] = sum(DemoJudge().score(prompts, texts)) / len(prompts)
    assert scores["builtin:tiny-gpt2-sft"] >= 0.85, scores
    assert scores[TINY] <= 0.5, scores
