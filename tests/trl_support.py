"""What the TRL parity tests share: offline TRL trainers' batches, our side of the same batch,
the models (a noisy policy and its unperturbed reference) and the comparison helpers. See
tests/test_trl_parity.py for how the comparison works."""
from __future__ import annotations

import copy
import math

import pytest
import torch

pytest.importorskip("trl")

from sweep.config.schema import ObjectiveConfig  # noqa: E402
from sweep.data.formats import LabeledCompletion, PreferencePair  # noqa: E402
from sweep.data.tokenize import tokenize_completions, tokenize_pairs  # noqa: E402
from sweep.engine.batch_loss import batch_loss  # noqa: E402
from sweep.engine.collate import CompletionCollator, PairCollator  # noqa: E402
from sweep.engine.reference import Reference  # noqa: E402
from sweep.models.builtin import builtin_path  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

RTOL, ATOL = 1e-4, 1e-5
MAX_LENGTH, MAX_PROMPT_LENGTH = 512, 256  # far above the rows below: nothing is truncated
NOISE_SEED, NOISE_SCALE = 1234, 0.05  # uniform in +-0.05 on weights of std 0.02: log-ratios of a few nats

EOS = "<|endoftext|>"

# Different lengths (so rows are padded), one row whose prompt's last token merges with both
# completions ("The c" + "at ..." -> "The cat ..."), one completion already ending with EOS.
PAIRS = [
    PreferencePair("How do I cook a", " fish? Boil it in water.", " bird?"),
    PreferencePair("The c", "at sat on the mat.", "at ran."),
    PreferencePair("User: Can you help me find the key?\nAssistant:", " Yes, it is here.", " No." + EOS),
    PreferencePair("I think", " we should go home now, because it is late and the food is cold.", " so."),
]

COMPLETIONS = [
    LabeledCompletion("How do I cook a", " fish? Boil it in water.", True),
    LabeledCompletion("The c", "at sat on the mat.", False),
    LabeledCompletion("User: Can you help me find the key?\nAssistant:", " Yes, it is here.", True),
    LabeledCompletion("I think", " we should go home now, because it is late.", False),
    LabeledCompletion("Please", " open the door" + EOS, True),
]


# --- models, data and our side ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(builtin_path("builtin:tiny-gpt2"))


@pytest.fixture(scope="module")
def tokenizer_without_bos(tokenizer):
    """The builtin tokenizer minus its bos_token, which only TRL's CPO/ORPO tokenization reads."""
    tok = copy.deepcopy(tokenizer)
    tok.bos_token = None
    assert tok.bos_token_id is None and tok.eos_token_id == tokenizer.eos_token_id
    ours = tokenize_pairs(PAIRS, tok, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT_LENGTH)
    assert ours == tokenize_pairs(PAIRS, tokenizer, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT_LENGTH)
    return tok


@pytest.fixture(scope="module")
def models():
    """(policy, reference): the initial model plus seeded uniform noise on every weight, and the initial model."""
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(builtin_path("builtin:tiny-gpt2"), dtype=torch.float32)
    config = reference.config
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.0
    policy = copy.deepcopy(reference)
    generator = torch.Generator().manual_seed(NOISE_SEED)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_((torch.rand(param.shape, generator=generator) * 2 - 1) * NOISE_SCALE)
    for model in (policy, reference):
        model.train()  # as in a training step; dropout is 0, so train and eval forward passes agree
        model.requires_grad_(False)
    return policy, reference


fresh = copy.deepcopy  # each TRL trainer gets its own copies: trainers patch the model's forward in place


def our_pair_batch(pairs, tokenizer):
    tokenized = tokenize_pairs(pairs, tokenizer, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT_LENGTH)
    return PairCollator(tokenizer.pad_token_id)(list(enumerate(tokenized)))


def our_completion_batch(rows, tokenizer):
    tokenized = tokenize_completions(rows, tokenizer, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT_LENGTH)
    return CompletionCollator(tokenizer.pad_token_id, mismatched=True)(list(enumerate(tokenized)))


@torch.no_grad()
def our_loss(models, batch, **params):
    """-> (batch loss, metrics, per-row losses)."""
    policy, reference = models
    config = ObjectiveConfig(**params)
    out = batch_loss(policy, Reference(model=reference), batch, config.resolved(), config)
    return out.loss.item(), {name: value.item() for name, value in out.metrics.items()}, out.losses


def rows(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


def assert_close(name, ours, theirs):
    assert math.isfinite(ours) and math.isfinite(theirs), (name, ours, theirs)
    assert ours == pytest.approx(theirs, rel=RTOL, abs=ATOL), f"{name}: ours {ours!r} != TRL {theirs!r}"


def assert_metrics_match(ours: dict[str, float], theirs: dict[str, float], expected: set[str]):
    """Every metric we report has a TRL name; `expected` names are present on both sides and equal."""
    assert set(ours) <= set(theirs), f"metrics TRL does not log: {sorted(set(ours) - set(theirs))}"
    assert expected <= set(ours), f"missing: {sorted(expected - set(ours))}"
    for name in sorted(ours):
        assert_close(name, ours[name], theirs[name])


def run_trainer(trainer):
    """TRL's first train batch and its loss and metrics, from the trainer's own compute_loss.

    -> (batch, loss, metrics). Each call appends one value per metric to the lists the trainer logs
    from: `_metrics["train"]` (DPO, KTO) or `_stored_metrics["train"]` (CPO, ORPO).
    """
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()  # DPO/KTO file metrics under "train" by the model's mode; dropout is 0 anyway
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    store = trainer._metrics if hasattr(trainer, "_metrics") else trainer._stored_metrics
    return batch, loss.item(), {name: values[-1] for name, values in store["train"].items()}


def config_kwargs(tmp_path_factory, name):
    """Offline, CPU, fp32, batches in dataset order."""
    return dict(output_dir=str(tmp_path_factory.mktemp(name)), report_to="none", use_cpu=True, bf16=False,
                fp16=False, save_strategy="no", logging_strategy="no", train_sampling_strategy="sequential")


REWARD_METRICS = {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                  "logps/chosen", "logps/rejected"}


def assert_not_degenerate(metrics):
    """Guard against a vacuous comparison: the rewards are not all equal (e.g. all 0 with policy == reference)."""
    assert abs(metrics["rewards/margins"]) > 1e-3
    if "rewards/accuracies" in metrics:  # some pairs ranked right, some wrong
        assert 0.0 < metrics["rewards/accuracies"] < 1.0


def pair_dataset():
    from datasets import Dataset

    return Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in PAIRS])
