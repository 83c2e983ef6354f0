"""Reading raw rows from every supported source: local files, `save_to_disk` directories,
hub datasets (or local directories in hub layout) through `datasets.load_dataset`.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from sweep.config.schema import DataSource
from sweep.data.formats import DataError
from sweep.models.hub import HubUnavailable, dataset_cached, require_hub

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
BUILTIN = "builtin:"
# Data sets shipped inside the package (sweep/data/demo, see its README): a config that names
# them runs from any directory, a wheel install, the REST service and `ray job submit` alike.
BUILTIN_DATA = {"demo/train": "demo/train.jsonl", "demo/eval": "demo/eval.jsonl"}


def builtin_data_path(path: str) -> Path:
    """The packaged file behind `builtin:NAME`; DataError naming the known ones otherwise."""
    name = path.removeprefix(BUILTIN)
    if name not in BUILTIN_DATA:
        raise DataError(path, "unknown built-in data set; known: " + ", ".join(BUILTIN + n for n in BUILTIN_DATA))
    return Path(__file__).parent / BUILTIN_DATA[name]


def local_path(path: str) -> Path:
    """A data source's `path` as a file or directory on this machine."""
    return builtin_data_path(path) if path.startswith(BUILTIN) else Path(path)


def read_rows(source: DataSource) -> tuple[list[dict], str]:
    """Raw rows (at most `source.limit`) and the description errors use for this source."""
    description = source.describe()
    if source.hf is not None:
        rows = _rows_from_dataset(_load_hub(source, source.hf, description), source.limit)
    else:
        rows = _read_path(source, local_path(source.path), description)
    if source.limit is not None:
        rows = rows[: source.limit]
    return rows, description


def _read_path(source: DataSource, path: Path, description: str) -> list[dict]:
    if not path.exists():
        raise DataError(description, f"no such file or directory ({path.resolve()})")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _rows_from_dataset(_load_saved(source, path, description), source.limit)
        # Any other directory is read like a hub dataset (e.g. data/train-00000-of-00001.parquet).
        return _rows_from_dataset(_load_hub(source, str(path), description), source.limit)
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return _json_lines(path.read_text(encoding="utf-8"), description)
        if suffix == ".json":
            return _json(path.read_text(encoding="utf-8"), description)
        if suffix == ".csv":
            return _csv(path)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except UnicodeDecodeError as err:
        raise DataError(description, f"not UTF-8 text: {err}") from err
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - parser errors differ per library; all mean "unreadable file"
        raise DataError(description, f"cannot read {suffix} file: {err}") from err
    raise DataError(
        description,
        f"unsupported file type {suffix!r}; use one of {', '.join(FILE_SUFFIXES)} or a save_to_disk directory",
    )


def _json_lines(text: str, description: str) -> list[dict]:
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(description, f"line {line_number}: invalid JSON ({err.msg})", row=len(rows)) from err
        if not isinstance(row, dict):
            raise DataError(description, f"line {line_number}: expected a JSON object, got {type(row).__name__}",
                            row=len(rows))
        rows.append(row)
    return rows


def _json(text: str, description: str) -> list[dict]:
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # `Dataset.to_json` writes JSON lines even into a .json file
            return _json_lines(text, description)
        raise DataError(description, f"invalid JSON ({err})") from err
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    elif isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        data = _columns_to_rows(data, description)
    elif isinstance(data, dict):  # a single object is one JSON line
        data = [data]
    if not isinstance(data, list):
        raise DataError(description, "expected a list of rows, {'data': [rows]}, a dict of columns, or JSON lines")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(description, f"expected a JSON object, got {type(row).__name__}", row=index)
    return data


def _columns_to_rows(columns: dict[str, list], description: str) -> list[dict]:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(description, f"columns have different lengths: {lengths}")
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        # Short lines give None for their missing cells, which validation reports as a missing value.
        return [dict(row) for row in csv.DictReader(handle, restkey="(extra cells)")]


def _load_saved(source: DataSource, path: Path, description: str):
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001
        raise DataError(description, f"cannot load the save_to_disk directory: {err}") from err
    if isinstance(loaded, datasets.DatasetDict):
        if source.split not in loaded:
            raise DataError(description, f"no split {source.split!r}; splits: {sorted(loaded)}")
        return loaded[source.split]
    return loaded


def _load_hub(source: DataSource, name: str, description: str):
    import datasets

    if not Path(name).is_dir():  # a hub data set: fail at once when the hub cannot be asked
        try:
            require_hub("data set", name, cached=dataset_cached(name), download=" --repo-type dataset")
        except HubUnavailable as err:
            raise DataError(description, str(err)) from None
    try:
        return datasets.load_dataset(name, source.name, split=source.split)
    except Exception as err:  # noqa: BLE001 - network, missing repo, bad config name, missing split
        raise DataError(description, f"cannot load with datasets.load_dataset: {type(err).__name__}: {err}") from err


def _rows_from_dataset(dataset, limit: int | None) -> list[dict]:
    if limit is not None and limit < len(dataset):
        dataset = dataset.select(range(limit))
    return dataset.to_list()
