"""Every source type `sweep.data.loading.read_rows` reads, each from a small file the test writes: jsonl,
json (list, {"data": [...]}, columns, JSON lines), csv, parquet, save_to_disk (Dataset and
DatasetDict) and a hub-layout parquet directory through `datasets.load_dataset`."""
from __future__ import annotations

import csv
import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweep.config.schema import DataConfig, DataSource
from sweep.data.loading import DataError, LabeledCompletion, PreferencePair, load_preference_data, read_rows

ROWS = [{"prompt": f"Q{i}?", "chosen": f" yes {i}", "rejected": f" no {i}"} for i in range(4)]
PAIRS = [PreferencePair(**row) for row in ROWS]


@pytest.fixture(autouse=True)
def local_datasets_cache(tmp_path, monkeypatch):
    # load_dataset caches what it prepares; keep that inside the test's directory.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def load_path(path, **overrides):
    return load_preference_data(DataConfig(train=DataSource(path=str(path)), eval=None, **overrides), paired=True)


def write_hub_layout(root, splits: dict[str, list[dict]]):
    (root / "data").mkdir(parents=True)
    for split, rows in splits.items():
        pq.write_table(pa.Table.from_pylist(rows), root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def test_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    rows, description = read_rows(DataSource(path=str(path)))
    assert rows == ROWS and description == str(path)
    assert load_path(path).train == PAIRS


def test_jsonl_invalid_line_names_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"d\.jsonl: row 1: line 2: invalid JSON"):
        read_rows(DataSource(path=str(path)))


@pytest.mark.parametrize(
    "content",
    [
        json.dumps(ROWS),
        json.dumps({"data": ROWS, "version": "1"}),
        json.dumps({key: [row[key] for row in ROWS] for key in ROWS[0]}),
        "\n".join(json.dumps(r) for r in ROWS),
    ],
    ids=["list", "data-key", "columns", "json-lines"],
)
def test_json_shapes(tmp_path, content):
    path = tmp_path / "d.json"
    path.write_text(content)
    assert load_path(path).train == PAIRS


def test_json_written_by_datasets_to_json(tmp_path):
    path = tmp_path / "d.json"
    datasets.Dataset.from_list(ROWS).to_json(str(path))
    assert load_path(path).train == PAIRS


def test_json_scalar_is_an_error(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match=r"d\.json: row 0: expected a JSON object"):
        read_rows(DataSource(path=str(path)))


def test_csv_with_string_labels(tmp_path):
    path = tmp_path / "d.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["prompt", "completion", "label"])
        writer.writeheader()
        writer.writerows([{"prompt": "Q", "completion": " yes", "label": "1"},
                          {"prompt": "Q", "completion": " no", "label": "0"}])
    cfg = DataConfig(train=DataSource(path=str(path)), eval=None)
    data = load_preference_data(cfg, paired=False)
    assert data.train == [LabeledCompletion("Q", " yes", True), LabeledCompletion("Q", " no", False)]


def test_csv_empty_cell_and_short_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,chosen,rejected\nQ," a"," b"\nQ,,b\nQ,a\n')
    with pytest.raises(DataError, match=r"d\.csv: row 1, column 'chosen': empty string \(2 invalid"):
        load_path(path)
    data = load_path(path, drop_invalid=True)
    assert data.dropped == 2 and data.train == [PreferencePair("Q", " a", " b")]


def test_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert load_path(path).train == PAIRS


def test_parquet_null_names_row_and_column(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS + [{"prompt": "Q", "chosen": None, "rejected": "r"}]), path)
    with pytest.raises(DataError, match=r"d\.parquet: row 4, column 'chosen': missing value \(null\)"):
        load_path(path)


def test_parquet_conversational_messages(tmp_path):
    path = tmp_path / "c.parquet"
    rows = [{"prompt": [{"role": "user", "content": "Sky?"}],
             "chosen": [{"role": "assistant", "content": "Blue."}],
             "rejected": [{"role": "assistant", "content": "Green."}]}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    data = load_path(path)
    assert data.format == "conversational" and data.train == [PreferencePair(**rows[0])]


def test_save_to_disk_dataset(tmp_path):
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    assert load_path(tmp_path / "saved").train == PAIRS


def test_save_to_disk_dataset_dict_picks_split(tmp_path):
    saved = tmp_path / "saved"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(ROWS[:3]),
        "test": datasets.Dataset.from_list(ROWS[3:]),
    }).save_to_disk(str(saved))
    cfg = DataConfig(train=DataSource(path=str(saved)), eval=DataSource(path=str(saved), split="test"))
    data = load_preference_data(cfg, paired=True)
    assert data.train == PAIRS[:3] and data.eval == PAIRS[3:]
    with pytest.raises(DataError, match=r"no split 'validation'; splits: \['test', 'train'\]"):
        read_rows(DataSource(path=str(saved), split="validation"))


def test_hub_layout_directory_through_load_dataset(tmp_path):
    hub = write_hub_layout(tmp_path / "hub", {"train": ROWS[:3], "test": ROWS[3:]})
    cfg = DataConfig(train=DataSource(hf=str(hub)), eval=DataSource(hf=str(hub), split="test"))
    data = load_preference_data(cfg, paired=True)
    assert data.train == PAIRS[:3] and data.eval == PAIRS[3:]
    assert data.summary()["sources"]["train"] == f"hf:{hub}[train]"


def test_hub_layout_directory_given_as_path(tmp_path):
    hub = write_hub_layout(tmp_path / "hub", {"train": ROWS})
    assert load_path(hub).train == PAIRS


def test_hub_missing_split_names_the_source(tmp_path):
    hub = write_hub_layout(tmp_path / "hub", {"train": ROWS})
    with pytest.raises(DataError) as info:
        read_rows(DataSource(hf=str(hub), split="nope"))
    assert info.value.source == f"hf:{hub}[nope]" and "load_dataset" in str(info.value)


def test_limit_reads_first_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    hub = write_hub_layout(tmp_path / "hub", {"train": ROWS})
    assert read_rows(DataSource(path=str(path), limit=2))[0] == ROWS[:2]
    assert read_rows(DataSource(hf=str(hub), limit=3))[0] == ROWS[:3]


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "train.jsonl"
    with pytest.raises(DataError) as info:
        load_path(missing)
    assert info.value.source == str(missing) and str(missing) in str(info.value)
    assert info.value.row is None and info.value.column is None


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'"):
        read_rows(DataSource(path=str(path)))
