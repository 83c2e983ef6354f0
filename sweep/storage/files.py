"""Files under storage.path, local or on an object store (s3://, gs://) alike, through
pyarrow's filesystems as Ray itself uses them. Every write is atomic: readers see the old
file or the new one, never a part."""
from __future__ import annotations

import uuid

import pyarrow.fs as pafs

from sweep.config.redact import write_private


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow filesystem + path inside it, for local dirs and s3:// gs:// URIs alike (as Ray does)."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), path


def read_bytes(path: str) -> bytes | None:
    fs, inner = filesystem(path)
    if fs.get_file_info(inner).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(inner) as stream:
        return stream.read()


def read_text(path: str) -> str | None:
    raw = read_bytes(path)
    return None if raw is None else raw.decode()


def write_bytes(path: str, payload: bytes) -> None:
    """Local files: owner-only (0600 in 0700 directories): study records hold database URLs
    (see sweep.config.redact). Object stores: their own access control."""
    if "://" not in path:
        write_private(path, payload)
        return
    fs, inner = filesystem(path)
    parent = inner.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    temp = f"{parent}/.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(temp) as stream:
        stream.write(payload)
    fs.move(temp, inner)  # a rename locally; copy + delete on object stores, still all-or-nothing to readers


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def is_dir(path: str) -> bool:
    fs, inner = filesystem(path)
    return fs.get_file_info(inner).type == pafs.FileType.Directory


def list_names(path: str) -> list[str]:
    """Base names of the entries of a directory ([] if it does not exist)."""
    fs, inner = filesystem(path)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return []
    return [info.base_name for info in fs.get_file_info(pafs.FileSelector(inner))]


def file_stamps(paths: list[str]) -> dict[str, tuple[int, int]]:
    """(modification time in ns, size) of each of `paths` that is a file: one call to its
    filesystem for all of them (the paths share one filesystem)."""
    if not paths:
        return {}
    fs, _ = filesystem(paths[0])
    infos = fs.get_file_info([filesystem(p)[1] for p in paths])
    return {p: (info.mtime_ns, info.size) for p, info in zip(paths, infos) if info.type == pafs.FileType.File}


def delete_file(path: str) -> None:
    fs, inner = filesystem(path)
    fs.delete_file(inner)


def delete_dir(path: str) -> None:
    fs, inner = filesystem(path)
    if fs.get_file_info(inner).type != pafs.FileType.NotFound:
        fs.delete_dir(inner)
