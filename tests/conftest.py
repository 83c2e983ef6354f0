"""Fixtures every tier shares."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The Hugging Face hub cannot be reached from these machines: huggingface_hub's three network
    calls of a push (create_repo, create_branch, upload_folder) are recorded instead, and the
    folder upload_folder was handed is copied to `hub.folder` (the export is temporary). Set
    `hub.refuse` to an exception to make create_repo fail as the hub would."""
    from huggingface_hub import HfApi

    calls: list[tuple] = []
    state = SimpleNamespace(calls=calls, folder=None, refuse=None)

    def create_repo(self, repo_id, *, private=False, exist_ok=False, **_):
        calls.append(("create_repo", repo_id, private, exist_ok, self.token))
        if state.refuse:
            raise state.refuse
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, *, branch, exist_ok=False, **_):
        calls.append(("create_branch", repo_id, branch, exist_ok))

    def upload_folder(self, *, folder_path, repo_id, revision=None, commit_message=None, **_):
        state.folder = tmp_path / "uploaded"
        shutil.copytree(folder_path, state.folder)  # the temporary export is gone after the call
        calls.append(("upload_folder", repo_id, revision, commit_message))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")

    for name, fn in [("create_repo", create_repo), ("create_branch", create_branch), ("upload_folder", upload_folder)]:
        monkeypatch.setattr(HfApi, name, fn)
    return state
