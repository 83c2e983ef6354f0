"""Our objectives' losses and metrics equal TRL 1.16's on the same models and data.

For every objective TRL also implements, the real TRL trainer is built offline (CPU, fp32, no
dropout, `report_to="none"`) on `builtin:tiny-gpt2` and a small dataset, one batch is taken from its
own train dataloader and passed to its own `compute_loss`, and the loss and the metrics it records
are compared with ours: `sweep.data.tokenize` -> `sweep.engine.collate` collator -> `sweep.engine.batch_loss.batch_loss`
on the same rows in the same order, with a separate frozen copy of the initial model as reference.

The policy is the initial model plus seeded weight noise, so log-ratios are a few nats (not all
zero) and pairs rank both ways; TRL gets its own copies of that policy and of the unperturbed reference.

Covered: DPO sigmoid / ipo / hinge / robust (DPOTrainer), KTO (KTOTrainer), SimPO (CPOTrainer with
loss_type="simpo", cpo_alpha=0), ORPO (ORPOTrainer). Known differences are handled as follows
(the first three are documented in objectives/pairwise.py and objectives/unpaired.py):

* DPO sigmoid: TRL 1.16 ignores label_smoothing there (we apply cDPO), so it is compared at ls = 0;
  robust is compared at ls > 0.
* ORPO: TRL's NLL term also covers the prompt tokens, ours only the completion. Everything else
  (odds-ratio term, rewards, log-probs, log-odds metrics) is compared exactly, and the NLL difference
  is tested explicitly: TRL's value equals ours recomputed over prompt + completion tokens.
* KTO: TRL averages the KL baseline over data-parallel ranks, ours is per worker batch; one process
  here, so they coincide.
* TRL's CPO/ORPO trainers tokenize with an older scheme than DPO/KTO: they prepend the tokenizer's BOS
  to the prompt and place each completion's boundary on its own. Our tokenization follows
  DPOTrainer/KTOTrainer, so the SimPO/ORPO comparisons use the same tokenizer with `bos_token` unset
  and rows whose chosen and rejected completions split at the same place; the token ids fed to both
  sides are asserted equal before anything else, and `test_trl_cpo_tokenization_prepends_bos` pins
  the BOS difference.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

pytest.importorskip("trl")

from objectives.logprobs import completion_logps  # noqa: E402
from objectives.registry import get_objective  # noqa: E402
from sweep.config.schema import ObjectiveConfig  # noqa: E402
from sweep.data.formats import LabeledCompletion, PreferencePair  # noqa: E402
from sweep.data.tokenize import tokenize_completions, tokenize_pairs  # noqa: E402
from sweep.engine.batch_loss import batch_loss  # noqa: E402
from sweep.engine.collate import CompletionCollator, PairCollator  # noqa: E402
from sweep.engine.reference import Reference  # noqa: E402
from sweep.engine.sequence_logps import forward_logits  # noqa: E402
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
    out = batch_loss(policy, Reference(model=reference), batch, get_objective(config.name), config)
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


# --- DPO: sigmoid, ipo, hinge, robust ------------------------------------------------------------

DPO_CASES = {
    # loss_type: (beta, label_smoothing)
    "sigmoid": (0.1, 0.0),  # TRL ignores label_smoothing for sigmoid; ours would apply cDPO
    "ipo": (0.3, 0.0),
    "hinge": (0.5, 0.0),
    "robust": (0.1, 0.2),
}
OUR_DPO_NAME = {"sigmoid": "dpo", "ipo": "ipo", "hinge": "hinge", "robust": "robust"}


def pair_dataset():
    from datasets import Dataset

    return Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in PAIRS])


@pytest.fixture(scope="module")
def dpo_run(models, tokenizer, tmp_path_factory):
    """loss_type -> (TRL batch, TRL loss, TRL metrics), one DPOTrainer per loss type."""
    from trl import DPOConfig, DPOTrainer

    policy, reference = models
    results = {}
    for loss_type, (beta, label_smoothing) in DPO_CASES.items():
        args = DPOConfig(**config_kwargs(tmp_path_factory, f"dpo-{loss_type}"), per_device_train_batch_size=len(PAIRS),
                         max_length=None, loss_type=[loss_type], beta=beta, label_smoothing=label_smoothing)
        trainer = DPOTrainer(model=fresh(policy), ref_model=fresh(reference), args=args, train_dataset=pair_dataset(),
                             processing_class=tokenizer)
        results[loss_type] = run_trainer(trainer)
    return results


def test_dpo_batches_hold_the_same_tokens(dpo_run, tokenizer):
    ours = our_pair_batch(PAIRS, tokenizer)
    theirs, _, _ = dpo_run["sigmoid"]
    assert rows(ours["input_ids"], ours["attention_mask"]) == rows(theirs["input_ids"], theirs["attention_mask"])
    assert rows(ours["input_ids"], ours["completion_mask"]) == rows(theirs["input_ids"], theirs["completion_mask"])
    assert ours["attention_mask"].sum(1).unique().numel() > 1  # rows of different lengths: padding happens


@pytest.mark.parametrize("loss_type", list(DPO_CASES))
def test_dpo_loss_and_metrics_equal_trl(dpo_run, models, tokenizer, loss_type):
    beta, label_smoothing = DPO_CASES[loss_type]
    _, trl_loss, trl_values = dpo_run[loss_type]
    loss, metrics, losses = our_loss(
        models, our_pair_batch(PAIRS, tokenizer), name=OUR_DPO_NAME[loss_type], beta=beta,
        label_smoothing=label_smoothing,
    )
    assert_not_degenerate(metrics)
    if loss_type == "hinge":  # both sides of the hinge: a pair beyond the margin, others inside it
        assert (losses == 0).any() and (losses > 0).any()
    assert_close("loss", loss, trl_loss)
    assert_metrics_match(metrics, trl_values, REWARD_METRICS)


# --- KTO ------------------------------------------------------------------------------------------

KTO_PARAMS = dict(beta=0.2, desirable_weight=1.0, undesirable_weight=1.3)


@pytest.fixture(scope="module")
def kto_run(models, tokenizer, tmp_path_factory):
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    policy, reference = models
    args = KTOConfig(
        **config_kwargs(tmp_path_factory, "kto"), per_device_train_batch_size=len(COMPLETIONS), max_length=None,
        loss_type="kto", **KTO_PARAMS,
    )
    dataset = Dataset.from_list(
        [{"prompt": r.prompt, "completion": r.completion, "label": r.accepted} for r in COMPLETIONS]
    )
    trainer = KTOTrainer(
        model=fresh(policy), ref_model=fresh(reference), args=args, train_dataset=dataset, processing_class=tokenizer
    )
    return run_trainer(trainer)


def test_kto_batches_hold_the_same_tokens(kto_run, tokenizer):
    ours = our_completion_batch(COMPLETIONS, tokenizer)
    theirs, _, _ = kto_run
    for prefix in ("", "kl_"):
        trl_prefix = prefix.upper()
        for mask in ("attention_mask", "completion_mask"):
            assert rows(ours[f"{prefix}input_ids"], ours[f"{prefix}{mask}"]) == rows(
                theirs[f"{trl_prefix}input_ids"], theirs[f"{trl_prefix}{mask}"]
            ), (prefix, mask)
    assert ours["accepted"].tolist() == theirs["label"].tolist()


def test_kto_loss_and_metrics_equal_trl(kto_run, models, tokenizer):
    _, trl_loss, trl_values = kto_run
    loss, metrics, _ = our_loss(models, our_completion_batch(COMPLETIONS, tokenizer), name="kto", **KTO_PARAMS)
    assert metrics["kl"] > 0  # the KL baseline is not clamped away: it enters the loss
    assert_not_degenerate(metrics)
    assert_close("loss", loss, trl_loss)
    assert_metrics_match(metrics, trl_values, {"kl", *REWARD_METRICS} - {"rewards/accuracies"})


# --- SimPO (CPOTrainer) and ORPO (ORPOTrainer) ----------------------------------------------------

SIMPO_PARAMS = dict(beta=2.0, gamma=0.7, label_smoothing=0.1)
ORPO_BETA = 0.25


def legacy_batch_rows(batch):
    """(chosen rows, rejected rows) of a CPO/ORPO batch: input ids and completion-token ids."""
    out = []
    for side in ("chosen", "rejected"):
        ids, attention, labels = (batch[f"{side}_{k}"] for k in ("input_ids", "attention_mask", "labels"))
        out.append((rows(ids, attention), rows(ids, labels != -100)))
    return out


def assert_same_tokens_as_ours(trl_batch, tokenizer):
    ours = our_pair_batch(PAIRS, tokenizer)
    half = len(PAIRS)
    mine = [
        (rows(ours["input_ids"][sl], ours["attention_mask"][sl]), rows(ours["input_ids"][sl], ours["completion_mask"][sl]))
        for sl in (slice(None, half), slice(half, None))
    ]
    assert mine == legacy_batch_rows(trl_batch)


@pytest.fixture(scope="module")
def simpo_run(models, tokenizer_without_bos, tmp_path_factory):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    policy, _ = models
    args = CPOConfig(
        **config_kwargs(tmp_path_factory, "simpo"), per_device_train_batch_size=len(PAIRS), max_length=MAX_LENGTH,
        loss_type="simpo", cpo_alpha=0.0, beta=SIMPO_PARAMS["beta"], simpo_gamma=SIMPO_PARAMS["gamma"],
        label_smoothing=SIMPO_PARAMS["label_smoothing"],
    )
    trainer = CPOTrainer(model=fresh(policy), args=args, train_dataset=pair_dataset(),
                         processing_class=tokenizer_without_bos)
    return run_trainer(trainer)


@pytest.fixture(scope="module")
def orpo_run(models, tokenizer_without_bos, tmp_path_factory):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    policy, _ = models
    args = ORPOConfig(
        **config_kwargs(tmp_path_factory, "orpo"), per_device_train_batch_size=len(PAIRS), max_length=MAX_LENGTH,
        beta=ORPO_BETA,
    )
    trainer = ORPOTrainer(model=fresh(policy), args=args, train_dataset=pair_dataset(),
                          processing_class=tokenizer_without_bos)
    return run_trainer(trainer)


def test_simpo_batch_holds_the_same_tokens(simpo_run, tokenizer_without_bos):
    assert_same_tokens_as_ours(simpo_run[0], tokenizer_without_bos)


def test_simpo_loss_and_metrics_equal_trl_cpo_trainer(simpo_run, models, tokenizer_without_bos):
    _, trl_loss, trl_values = simpo_run
    assert trl_values["nll_loss"] == 0.0  # cpo_alpha = 0: no NLL term, which we do not report
    loss, metrics, _ = our_loss(models, our_pair_batch(PAIRS, tokenizer_without_bos), name="simpo", **SIMPO_PARAMS)
    assert_not_degenerate(metrics)
    assert_close("loss", loss, trl_loss)
    assert_metrics_match(metrics, trl_values, REWARD_METRICS)


def test_orpo_batch_holds_the_same_tokens(orpo_run, tokenizer_without_bos):
    assert_same_tokens_as_ours(orpo_run[0], tokenizer_without_bos)


def test_orpo_odds_ratio_term_and_metrics_equal_trl(orpo_run, models, tokenizer_without_bos):
    _, trl_loss, trl_values = orpo_run
    loss, metrics, _ = our_loss(models, our_pair_batch(PAIRS, tokenizer_without_bos), name="orpo", beta=ORPO_BETA)
    assert_not_degenerate(metrics)
    # loss = nll_loss - beta * mean log sigmoid(log odds ratio) on both sides; only the NLL differs.
    assert_close("loss - nll_loss", loss - metrics["nll_loss"], trl_loss - trl_values["nll_loss"])
    shared = {name: value for name, value in metrics.items() if name != "nll_loss"}
    assert_metrics_match(shared, trl_values, REWARD_METRICS | {"log_odds_ratio", "log_odds_chosen"})


def test_orpo_nll_differs_from_trl_only_by_the_prompt_tokens(orpo_run, models, tokenizer_without_bos):
    """Documented difference: TRL's ORPO NLL averages over the chosen prompt *and* completion tokens,
    ours over the completion tokens only (the paper's L_SFT on y)."""
    _, _, trl_values = orpo_run
    batch = our_pair_batch(PAIRS, tokenizer_without_bos)
    _, metrics, _ = our_loss(models, batch, name="orpo", beta=ORPO_BETA)
    chosen = {key: value[: len(PAIRS)] for key, value in batch.items() if key != "index"}
    with torch.no_grad():
        logits = forward_logits(models[0], chosen)
    completion_sum, completion_tokens = completion_logps(logits, chosen["input_ids"], chosen["completion_mask"])
    full_sum, full_tokens = completion_logps(logits, chosen["input_ids"], chosen["attention_mask"])
    assert_close("nll_loss (completion tokens)", metrics["nll_loss"],
                 (-completion_sum.sum() / completion_tokens.sum()).item())
    assert_close("TRL nll_loss (prompt + completion tokens)", (-full_sum.sum() / full_tokens.sum()).item(),
                 trl_values["nll_loss"])
    assert abs(metrics["nll_loss"] - trl_values["nll_loss"]) > 1e-3


def test_trl_cpo_tokenization_prepends_bos(models, tokenizer, tmp_path_factory):
    """Why the SimPO/ORPO comparisons unset bos_token: with it set (builtin:tiny-gpt2, GPT-2 style BOS =
    EOS), TRL's CPO/ORPO trainers prefix every prompt with BOS, which DPOTrainer/KTOTrainer and our
    tokenization do not do. Pinned so a TRL change shows up here."""
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    args = CPOConfig(**config_kwargs(tmp_path_factory, "cpo-bos"), per_device_train_batch_size=len(PAIRS),
                     max_length=MAX_LENGTH, loss_type="simpo", cpo_alpha=0.0)
    trainer = CPOTrainer(model=fresh(models[0]), args=args, train_dataset=pair_dataset(), processing_class=tokenizer)
    ours = tokenize_pairs(PAIRS, tokenizer, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT_LENGTH)
    bos = tokenizer.bos_token_id
    for row, pair in zip(trainer.train_dataset, ours):
        assert row["chosen_input_ids"] == [bos] + pair.prompt_ids + pair.chosen_ids
        assert row["rejected_input_ids"] == [bos] + pair.prompt_ids + pair.rejected_ids
