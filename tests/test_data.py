"""Formats, validation, renames, splits and pair/unpair shaping of `sweep.data.loading`.
Every source is a small file the test writes; source types are covered in test_data_sources.py."""
from __future__ import annotations

import json
import logging
import pickle

import pytest

from sweep.config.schema import DataConfig, DataSource
from sweep.data.loading import (
    DataError,
    LabeledCompletion,
    PreferencePair,
    load_preference_data,
)

HH_CHOSEN = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Sky colour?\n\nAssistant: Blue."
HH_REJECTED = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Sky colour?\n\nAssistant: Green."
HH_PROMPT = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Sky colour?\n\nAssistant:"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def config(path, **overrides) -> DataConfig:
    return DataConfig(train=DataSource(path=str(path)), eval=None, **overrides)


def load(tmp_path, rows, *, paired=True, name="train.jsonl", **overrides):
    path = write_jsonl(tmp_path / name, rows)
    return load_preference_data(config(path, **overrides), paired=paired)


def pairs_rows(n: int) -> list[dict]:
    return [{"prompt": f"Q{i}?", "chosen": f" good {i}", "rejected": f" bad {i}"} for i in range(n)]


# --- formats ---------------------------------------------------------------------------------

def test_paired_rm_single_context_style(tmp_path):
    data = load(tmp_path, pairs_rows(3))
    assert data.format == "paired" and data.paired and data.dropped == 0
    assert data.train[1] == PreferencePair("Q1?", " good 1", " bad 1")
    assert data.eval == []


def test_paired_argilla_orca_with_input_renamed_to_prompt(tmp_path):
    rows = [{"system": "", "input": "Add 2+2", "chosen": "4", "rejected": "5", "status": "tie"}]
    data = load(tmp_path, rows, columns={"prompt": "input"})
    assert data.format == "paired"
    assert data.train == [PreferencePair("Add 2+2", "4", "5")]


def test_paired_static_hh_schema_ignores_response(tmp_path):
    rows = [{"prompt": HH_PROMPT, "response": " Blue.", "chosen": " Blue.", "rejected": " Green."}]
    data = load(tmp_path, rows)
    assert data.format == "paired"
    assert data.train == [PreferencePair(HH_PROMPT, " Blue.", " Green.")]


def test_hh_transcripts_split_at_last_assistant_marker(tmp_path):
    data = load(tmp_path, [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}])
    assert data.format == "hh"
    assert data.train == [PreferencePair(HH_PROMPT, " Blue.", " Green.")]


def test_hh_declared_format_matches_extract_anthropic_prompt(tmp_path):
    data = load(tmp_path, [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}], format="hh")
    pair = data.train[0]
    # eric-mitchell/direct-preference-optimization: prompt = text[: rfind(marker) + len(marker)]
    assert pair.prompt == HH_CHOSEN[: HH_CHOSEN.rfind("\n\nAssistant:") + len("\n\nAssistant:")]
    assert pair.prompt + pair.chosen == HH_CHOSEN and pair.prompt + pair.rejected == HH_REJECTED


def test_hh_without_assistant_marker_names_row_and_column(tmp_path):
    rows = [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, {"chosen": "\n\nHuman: hi", "rejected": HH_REJECTED}]
    with pytest.raises(DataError) as info:
        load(tmp_path, rows, format="hh")
    assert (info.value.row, info.value.column) == (1, "chosen")
    assert "train.jsonl: row 1, column 'chosen'" in str(info.value)


def test_hh_rejected_must_share_the_prompt(tmp_path):
    rows = [{"chosen": HH_CHOSEN, "rejected": "\n\nHuman: Other\n\nAssistant: Green."}]
    with pytest.raises(DataError, match=r"row 0, column 'rejected': does not share"):
        load(tmp_path, rows)


def test_conversational_with_prompt_lists(tmp_path):
    row = {"prompt": [user("Sky?")], "chosen": [assistant("Blue.")], "rejected": [assistant("Green.")]}
    data = load(tmp_path, [row])
    assert data.format == "conversational"
    assert data.train == [PreferencePair([user("Sky?")], [assistant("Blue.")], [assistant("Green.")])]


def test_conversational_full_conversations_share_leading_messages_as_prompt(tmp_path):
    history = [user("Hi"), assistant("Hello"), user("Sky?")]
    row = {"chosen": history + [assistant("Blue.")], "rejected": history + [assistant("Green.")]}
    data = load(tmp_path, [row])
    assert data.train == [PreferencePair(history, [assistant("Blue.")], [assistant("Green.")])]


def test_conversational_identical_conversations_have_no_completion(tmp_path):
    convo = [user("Sky?"), assistant("Blue.")]
    with pytest.raises(DataError, match=r"row 0, column 'chosen': no completion"):
        load(tmp_path, [{"chosen": convo, "rejected": convo}])


def test_conversational_completion_must_start_with_assistant(tmp_path):
    row = {"chosen": [user("a"), assistant("b"), user("c")], "rejected": [user("a"), assistant("b"), user("d")]}
    with pytest.raises(DataError, match=r"column 'chosen': completion must start with an assistant"):
        load(tmp_path, [row], format="conversational")


def test_conversational_message_content_must_be_text(tmp_path):
    row = {"prompt": [user("Sky?")], "chosen": [{"role": "assistant", "content": 3}], "rejected": [assistant("x")]}
    with pytest.raises(DataError, match=r"row 0, column 'chosen': message 0: content must be a string"):
        load(tmp_path, [row])


def test_unpaired_text_and_label_has_empty_prompt(tmp_path):
    data = load(tmp_path, [{"text": "nice", "label": 1}, {"text": "rude", "label": 0}], paired=False)
    assert data.format == "unpaired" and not data.paired
    assert data.train == [LabeledCompletion("", "nice", True), LabeledCompletion("", "rude", False)]


def test_unpaired_prompt_completion_label(tmp_path):
    rows = [{"prompt": "Sky?", "completion": " Blue.", "label": True}]
    assert load(tmp_path, rows, paired=False).train == [LabeledCompletion("Sky?", " Blue.", True)]


def test_unpaired_conversational(tmp_path):
    rows = [{"prompt": [user("Sky?")], "completion": [assistant("Green.")], "label": "reject"}]
    data = load(tmp_path, rows, paired=False)
    assert data.train == [LabeledCompletion([user("Sky?")], [assistant("Green.")], False)]


@pytest.mark.parametrize(
    "label, accepted",
    [(True, True), (False, False), (1, True), (0, False), ("accept", True), ("Reject", False),
     ("ACCEPTED", True), ("rejected", False), ("chosen", True), ("good", True), ("Bad", False),
     ("true", True), ("False", False), ("1", True), ("0", False)],
)
def test_unpaired_label_spellings(tmp_path, label, accepted):
    data = load(tmp_path, [{"text": "t", "label": label}], paired=False)
    assert data.train[0].accepted is accepted


@pytest.mark.parametrize("label", ["maybe", 2, -1, "", [1]])
def test_bad_label_names_row_and_column(tmp_path, label):
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": label}]
    with pytest.raises(DataError) as info:
        load(tmp_path, rows, paired=False)
    assert (info.value.row, info.value.column) == (1, "label")
    assert str(info.value).startswith(f"{tmp_path / 'train.jsonl'}: row 1, column 'label': unrecognised label")


def test_auto_detection_unknown_columns_lists_found_and_expected(tmp_path):
    with pytest.raises(DataError) as info:
        load(tmp_path, [{"question": "q", "answer": "a"}])
    message = str(info.value)
    assert "['answer', 'question']" in message
    for fmt in ("paired:", "hh:", "conversational:", "unpaired:"):
        assert fmt in message


def test_auto_detection_ambiguous_columns(tmp_path):
    with pytest.raises(DataError, match=r"ambiguous.*columns found: \['chosen', 'label', 'rejected', 'text'\]"):
        load(tmp_path, [{"chosen": "a", "rejected": "b", "text": "c", "label": 1}])


def test_declared_format_overrides_detection(tmp_path):
    # Paired columns read as hh when declared: prompt is ignored and the transcripts split.
    rows = [{"prompt": "ignored", "chosen": HH_CHOSEN, "rejected": HH_REJECTED}]
    assert load(tmp_path, rows, format="hh").train[0].prompt == HH_PROMPT


# --- renames -----------------------------------------------------------------------------------

def test_rename_of_absent_column_names_it(tmp_path):
    with pytest.raises(DataError) as info:
        load(tmp_path, pairs_rows(2), columns={"prompt": "question"})
    assert info.value.column == "question" and "column 'question'" in str(info.value)
    assert "['chosen', 'prompt', 'rejected']" in str(info.value)


def test_rename_swap(tmp_path):
    data = load(tmp_path, pairs_rows(1), columns={"chosen": "rejected", "rejected": "chosen"})
    assert data.train == [PreferencePair("Q0?", " bad 0", " good 0")]


def test_errors_name_the_file_column_of_a_renamed_column(tmp_path):
    rows = [{"input": "q", "chosen": "a", "rejected": "b"}, {"input": " ", "chosen": "a", "rejected": "b"}]
    with pytest.raises(DataError, match=r"row 1, column 'input': empty string"):
        load(tmp_path, rows, columns={"prompt": "input"})


# --- validation --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "bad_row, column, message",
    [
        ({"prompt": "q", "rejected": "b"}, "chosen", "missing column"),
        ({"prompt": "q", "chosen": "", "rejected": "b"}, "chosen", "empty string"),
        ({"prompt": "q", "chosen": " \n\t", "rejected": "b"}, "chosen", "empty string"),
        ({"prompt": "q", "chosen": "a", "rejected": 7}, "rejected", "expected a string, got int"),
        ({"prompt": ["q"], "chosen": "a", "rejected": "b"}, "prompt", "expected a string, got list"),
        ({"prompt": None, "chosen": "a", "rejected": "b"}, "prompt", "missing value (null)"),
    ],
)
def test_invalid_row_names_file_row_and_column(tmp_path, bad_row, column, message):
    rows = pairs_rows(12) + [bad_row] + pairs_rows(2)
    with pytest.raises(DataError) as info:
        load(tmp_path, rows, format="paired", name="x.jsonl")
    err = info.value
    assert (err.source, err.row, err.column) == (str(tmp_path / "x.jsonl"), 12, column)
    assert str(err) == (f"{tmp_path / 'x.jsonl'}: row 12, column {column!r}: {message} "
                        "(the only invalid row; data.drop_invalid: true drops it)")


def test_several_invalid_rows_raise_the_first_and_count_them(tmp_path):
    rows = pairs_rows(2) + [{"prompt": "q", "chosen": "", "rejected": "b"}] * 3
    with pytest.raises(DataError, match=r"row 2, column 'chosen': empty string \(3 invalid rows in all"):
        load(tmp_path, rows)


def test_drop_invalid_drops_counts_and_warns(tmp_path, caplog):
    rows = pairs_rows(4)
    rows.insert(1, {"prompt": "q", "chosen": "", "rejected": "b"})
    rows.insert(3, {"prompt": "q", "chosen": "a"})
    with caplog.at_level(logging.WARNING, logger="sweep.data.loading"):
        data = load(tmp_path, rows, drop_invalid=True)
    assert data.dropped == 2 and len(data.train) == 4
    assert data.summary()["dropped"] == 2
    assert "dropped 2 of 6 rows" in caplog.text and "row 1, column 'chosen'" in caplog.text


def test_drop_invalid_counts_eval_rows_too(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", pairs_rows(3))
    eval_ = write_jsonl(tmp_path / "eval.jsonl", pairs_rows(2) + [{"prompt": "q", "chosen": 1, "rejected": "b"}])
    cfg = DataConfig(train=DataSource(path=str(train)), eval=DataSource(path=str(eval_)), drop_invalid=True)
    data = load_preference_data(cfg, paired=True)
    assert (len(data.train), len(data.eval), data.dropped) == (3, 2, 1)


def test_all_rows_invalid_is_an_error_even_with_drop_invalid(tmp_path):
    with pytest.raises(DataError, match="no valid rows"):
        load(tmp_path, [{"prompt": "q", "chosen": "", "rejected": "b"}], drop_invalid=True)


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: no rows"):
        load_preference_data(config(tmp_path / "empty.jsonl"), paired=True)


# --- eval split, shaping, summary -----------------------------------------------------------------

def test_eval_fraction_split_is_seeded_and_disjoint(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", pairs_rows(20))
    cfg = config(path, eval_fraction=0.25)
    first = load_preference_data(cfg, paired=True, seed=3)
    again = load_preference_data(cfg, paired=True, seed=3)
    other = load_preference_data(cfg, paired=True, seed=4)
    assert (len(first.train), len(first.eval)) == (15, 5)
    assert first.train == again.train and first.eval == again.eval
    assert other.eval != first.eval
    assert sorted(first.train + first.eval, key=lambda p: int(p.prompt[1:-1])) == [
        PreferencePair(**row) for row in pairs_rows(20)
    ]


def test_eval_fraction_always_holds_out_one_row_and_leaves_one(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", pairs_rows(3))
    assert len(load_preference_data(config(path, eval_fraction=0.01), paired=True).eval) == 1
    with pytest.raises(DataError, match="leaves no training rows"):
        load_preference_data(config(write_jsonl(tmp_path / "one.jsonl", pairs_rows(1)), eval_fraction=0.5),
                             paired=True)


def test_eval_source(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", pairs_rows(3))
    eval_ = write_jsonl(tmp_path / "eval.jsonl", [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}])
    data = load_preference_data(
        DataConfig(train=DataSource(path=str(train)), eval=DataSource(path=str(eval_))), paired=True
    )
    assert data.format == "paired" and data.eval == [PreferencePair(HH_PROMPT, " Blue.", " Green.")]
    assert data.summary()["sources"] == {"train": str(train), "eval": str(eval_)}


def test_pairs_become_accepted_and_rejected_rows_for_unpaired_objectives(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", pairs_rows(10))
    data = load_preference_data(config(path, eval_fraction=0.2), paired=False, seed=1)
    assert data.format == "paired" and not data.paired
    assert (len(data.train), len(data.eval)) == (16, 4)
    # The split happens before unpairing: both rows of a pair land on the same side, chosen first.
    for rows in (data.train, data.eval):
        for accepted, rejected in zip(rows[::2], rows[1::2]):
            i = accepted.prompt[1:-1]
            assert accepted == LabeledCompletion(f"Q{i}?", f" good {i}", True)
            assert rejected == LabeledCompletion(f"Q{i}?", f" bad {i}", False)
    summary = data.summary()
    assert (summary["train_accepted"], summary["train_rejected"], summary["eval_accepted"]) == (8, 8, 2)


def test_paired_objective_rejects_unpaired_data_naming_the_source(tmp_path):
    with pytest.raises(DataError) as info:
        load(tmp_path, [{"text": "a", "label": 1}], paired=True, name="kto.jsonl")
    assert info.value.source == str(tmp_path / "kto.jsonl") and "needs paired data" in str(info.value)


def test_summary(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", pairs_rows(10))
    summary = load_preference_data(config(path, eval_fraction=0.3), paired=True).summary()
    assert summary == {
        "format": "paired", "paired": True, "train_rows": 7, "eval_rows": 3, "dropped": 0,
        "sources": {"train": str(path), "eval": f"eval_fraction 0.3 of {path} (seed 0)"},
    }


def test_data_error_survives_pickling():
    err = DataError("x.jsonl", "empty string", row=3, column="chosen")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.source, copy.row, copy.column, str(copy)) == ("x.jsonl", 3, "chosen", str(err))
    assert str(err) == "x.jsonl: row 3, column 'chosen': empty string"
    assert str(DataError("x.jsonl", "no rows")) == "x.jsonl: no rows"
