"""`sweep.data.tokenize` on a real fast tokenizer trained here (byte-level BPE, offline): prompt/completion
boundaries, EOS, truncation, chat templates, and parity with TRL 1.16's DPOTrainer."""
from __future__ import annotations

import logging

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from sweep.data.loading import LabeledCompletion, PreferencePair
from sweep.data.tokenize import TokenizedPair, tokenize_completions, tokenize_pairs

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "The sky is blue. The sun is in the sky.",
    "The grass is green and the sea is blue.",
    "\n\nHuman: What colour is the sky?\n\nAssistant: The sky is blue.",
    "<|user|>hello\n<|assistant|>hi there\n",
]
EOS = "<|endoftext|>"


def make_tokenizer(*, bos: bool = False) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on CORPUS; with bos=True it prepends <s> like Llama tokenizers do."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=[EOS, "<|pad|>", "<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    extra = {"bos_token": "<s>"} if bos else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token="<|pad|>", chat_template=CHAT_TEMPLATE, **extra
    )


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def ids(tok, text):
    return tok(text)["input_ids"]


def chat_ids(tok, messages, **kwargs):
    return list(tok.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])


def one_pair(tok, pair, max_length=512, max_prompt_length=256) -> TokenizedPair:
    (out,) = tokenize_pairs([pair], tok, max_length=max_length, max_prompt_length=max_prompt_length)
    return out


def test_text_pair_boundary_and_eos(tok):
    out = one_pair(tok, PreferencePair("The sky is", " blue.", " green."))
    assert out.prompt_ids == ids(tok, "The sky is")
    assert out.prompt_ids + out.chosen_ids == ids(tok, "The sky is blue." + EOS)
    assert out.prompt_ids + out.rejected_ids == ids(tok, "The sky is green." + EOS)
    assert out.chosen_ids[-1] == tok.eos_token_id and out.rejected_ids[-1] == tok.eos_token_id
    assert tok.decode(out.chosen_ids) == " blue." + EOS


def test_eos_is_not_doubled(tok):
    out = one_pair(tok, PreferencePair("The sky is", " blue." + EOS, " green."))
    assert out.chosen_ids.count(tok.eos_token_id) == 1 and out.chosen_ids[-1] == tok.eos_token_id


def test_completion_starts_where_prompt_and_full_tokens_diverge(tok):
    # "The sk" + "y is" merges across the boundary: the prompt's last token is not in prompt+completion.
    prompt_alone = ids(tok, "The sk")
    full = ids(tok, "The sky is blue." + EOS)
    assert full[: len(prompt_alone)] != prompt_alone
    out = one_pair(tok, PreferencePair("The sk", "y is blue.", "y is green."))
    shared = next(i for i, (a, b) in enumerate(zip(prompt_alone, full)) if a != b)
    assert out.prompt_ids == prompt_alone[:shared]
    assert out.prompt_ids + out.chosen_ids == full


def test_pair_boundary_is_the_minimum_over_chosen_and_rejected(tok):
    pair = PreferencePair("The sk", "y is blue.", "! no")
    out = one_pair(tok, pair)
    rejected_full = ids(tok, "The sk! no" + EOS)
    assert ids(tok, "The sk") == rejected_full[: len(ids(tok, "The sk"))]  # rejected keeps the prompt intact
    assert len(out.prompt_ids) < len(ids(tok, "The sk"))  # but chosen's merge moves the shared boundary
    assert out.prompt_ids + out.rejected_ids == rejected_full
    assert out.prompt_ids + out.chosen_ids == ids(tok, "The sky is blue." + EOS)


def test_prompt_keeps_its_last_tokens(tok):
    prompt = "The grass is green and the sea is blue. The sky is"
    full_prompt = ids(tok, prompt)
    out = one_pair(tok, PreferencePair(prompt, " blue.", " green."), max_length=64, max_prompt_length=4)
    assert len(full_prompt) > 4 and out.prompt_ids == full_prompt[-4:]
    assert out.chosen_ids == ids(tok, prompt + " blue." + EOS)[len(full_prompt):]


def test_completions_are_cut_from_the_right_to_fit_max_length(tok):
    completion = " blue. The grass is green and the sea is blue."
    out = one_pair(tok, PreferencePair("The sky is", completion, " no."), max_length=8, max_prompt_length=4)
    prompt = ids(tok, "The sky is")
    assert out.prompt_ids == prompt[-4:]
    untruncated = ids(tok, "The sky is" + completion + EOS)[len(prompt):]
    assert out.chosen_ids == untruncated[: 8 - len(out.prompt_ids)]
    assert tok.eos_token_id not in out.chosen_ids  # the cut removes the EOS too
    assert len(out.prompt_ids) + len(out.rejected_ids) <= 8


def test_prompt_yields_room_for_one_completion_token(tok):
    prompt = "The grass is green and the sea is blue."
    out = one_pair(tok, PreferencePair(prompt, " yes", " no"), max_length=5, max_prompt_length=10)
    assert len(out.prompt_ids) == 4 and out.prompt_ids == ids(tok, prompt)[-4:]
    assert len(out.chosen_ids) == 1 and len(out.rejected_ids) == 1


def test_truncation_and_boundary_moves_are_logged(tok, caplog):
    pairs = [PreferencePair("The grass is green and the sk", "y is blue.", "y is green."),
             PreferencePair("The sky is", " blue.", " no")]
    with caplog.at_level(logging.INFO, logger="sweep.data.tokenize"):
        tokenize_pairs(pairs, tok, max_length=4, max_prompt_length=2)
    assert "in 1 of 2 rows the tokenized prompt is not a prefix" in caplog.text
    assert "2 of 2 prompts left-truncated, 4 completions right-truncated" in caplog.text


def test_batched_text_tokenization_equals_one_call_per_row(tok):
    pairs = [PreferencePair(f"The sky is {i}", " blue.", " green.") for i in range(2500)]
    out = tokenize_pairs(pairs, tok, max_length=64, max_prompt_length=32)
    assert out[0] == one_pair(tok, pairs[0], 64, 32) and out[-1] == one_pair(tok, pairs[-1], 64, 32)
    assert out[1500] == one_pair(tok, pairs[1500], 64, 32)


def test_rows_are_never_dropped(tok):
    long_text = " ".join(CORPUS) * 5
    pairs = [PreferencePair(long_text, long_text, long_text), PreferencePair("a", "b", "c")]
    out = tokenize_pairs(pairs, tok, max_length=16, max_prompt_length=8)
    assert len(out) == 2 and all(len(p.prompt_ids) + len(p.chosen_ids) <= 16 for p in out)


def test_conversational_pair_uses_the_chat_template(tok):
    prompt = [{"role": "user", "content": "hello"}]
    chosen, rejected = [{"role": "assistant", "content": "hi there"}], [{"role": "assistant", "content": "go"}]
    out = one_pair(tok, PreferencePair(prompt, chosen, rejected))
    assert out.prompt_ids == chat_ids(tok, prompt, add_generation_prompt=True)
    assert out.prompt_ids + out.chosen_ids == chat_ids(tok, prompt + chosen)
    assert tok.decode(out.chosen_ids) == "hi there\n"  # the template closes the turn; no EOS text added
    assert tok.eos_token_id not in out.rejected_ids


def test_conversational_needs_a_chat_template():
    bare = make_tokenizer()
    bare.chat_template = None
    with pytest.raises(ValueError, match="chat_template"):
        tokenize_pairs([PreferencePair([{"role": "user", "content": "a"}], [{"role": "assistant", "content": "b"}],
                                       [{"role": "assistant", "content": "c"}])], bare,
                       max_length=32, max_prompt_length=16)


def test_completions_text_conversational_and_empty_prompt(tok):
    rows = [
        LabeledCompletion("The sky is", " blue.", True),
        LabeledCompletion("", "The sea is blue.", False),
        LabeledCompletion([{"role": "user", "content": "hello"}], [{"role": "assistant", "content": "hi"}], True),
    ]
    text, bare, chat = tokenize_completions(rows, tok, max_length=64, max_prompt_length=32)
    assert text.prompt_ids == ids(tok, "The sky is") and text.accepted is True
    assert text.prompt_ids + text.completion_ids == ids(tok, "The sky is blue." + EOS)
    assert bare.prompt_ids == [] and bare.completion_ids == ids(tok, "The sea is blue." + EOS)
    assert bare.accepted is False
    assert chat.prompt_ids == chat_ids(tok, rows[2].prompt, add_generation_prompt=True)
    assert chat.prompt_ids + chat.completion_ids == chat_ids(tok, rows[2].prompt + rows[2].completion)


def test_completion_truncation(tok):
    rows = [LabeledCompletion("The grass is green and the sea is", " blue. The sky is blue.", True)]
    (out,) = tokenize_completions(rows, tok, max_length=6, max_prompt_length=3)
    assert len(out.prompt_ids) == 3 and len(out.completion_ids) == 3


def test_special_tokens_follow_the_tokenizer_default_like_trl():
    # TRL tokenizes text with tokenizer(text): a BOS-adding tokenizer puts BOS on the prompt only.
    tok = make_tokenizer(bos=True)
    out = one_pair(tok, PreferencePair("The sky is", " blue.", " green."))
    assert out.prompt_ids[0] == tok.bos_token_id and tok.bos_token_id not in out.chosen_ids


# --- parity with TRL's DPOTrainer --------------------------------------------------------------------

TEXT_PAIRS = [
    PreferencePair("The sky is", " blue.", " green."),
    PreferencePair("The sk", "y is blue.", "! no"),
    PreferencePair("\n\nHuman: What colour is the sky?\n\nAssistant:", " The sky is blue.", " Green." + EOS),
    PreferencePair("The grass is green and the sea is blue. " * 3, " The sun.", " The sea is in the sky."),
]
CHAT_PAIRS = [
    PreferencePair([{"role": "user", "content": "hello"}], [{"role": "assistant", "content": "hi there"}],
                   [{"role": "assistant", "content": "go away"}]),
    PreferencePair([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sky?"}],
                   [{"role": "assistant", "content": "Blue."}], [{"role": "assistant", "content": "The sky is green."}]),
]


def trl_tokenized(tok, pairs):
    """Tokenize through a real DPOTrainer built offline from a tiny GPT-2 config."""
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel
    from trl import DPOConfig, DPOTrainer

    config = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    args = DPOConfig(output_dir="unused-dpo-output", report_to=[], max_length=None, use_cpu=True,
                     save_strategy="no", logging_strategy="no")
    dataset = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    trainer = DPOTrainer(model=GPT2LMHeadModel(config), ref_model=GPT2LMHeadModel(config), args=args,
                         train_dataset=dataset, processing_class=tok)
    return [(row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) for row in trainer.train_dataset]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # DPOConfig's own deprecated-field defaults
@pytest.mark.parametrize("pairs", [TEXT_PAIRS, CHAT_PAIRS], ids=["text", "conversational"])
@pytest.mark.parametrize("bos", [False, True], ids=["no-bos", "bos"])
def test_parity_with_trl_dpo_trainer(tmp_path, monkeypatch, pairs, bos):
    monkeypatch.chdir(tmp_path)
    tok = make_tokenizer(bos=bos)
    ours = tokenize_pairs(pairs, tok, max_length=1024, max_prompt_length=512)
    assert [(o.prompt_ids, o.chosen_ids, o.rejected_ids) for o in ours] == trl_tokenized(tok, pairs)
