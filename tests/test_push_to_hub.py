"""`best --push-to-hub` up to the hub: the hub cannot be reached from here, so only
huggingface_hub's three network calls are replaced (the `hub` fixture, tests/conftest.py);
everything before them is real (a checkpoint of the built-in model, the export, the model
card). Without a token nothing is exported or uploaded."""
from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from huggingface_hub.errors import HfHubHTTPError
from report_study import build
from transformers import AutoModelForCausalLM, AutoTokenizer

from sweep.cli.main import main
from sweep.models.builtin import builtin_path
from sweep.service import reports
from sweep.service.settings import from_env


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The hand-made study (tests/report_study.py), its champion's checkpoint a real model folder."""
    trials = [(0.2, 6e-5, 0.95), (0.1, 3e-5, 0.80), (0.01, 5e-4, 0.40)]
    record, rows = build(tmp_path_factory.mktemp("push") / "runs", trials=trials, stopped=3)
    for row in rows:
        shutil.copytree(builtin_path("builtin:tiny-gpt2"), row.checkpoint_path)
    return record, rows


def no_token(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login either
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))


def test_without_a_token_nothing_is_exported_or_uploaded(hub, monkeypatch, tmp_path, capsys):
    no_token(monkeypatch, tmp_path)
    assert reports.hub_token() is None
    # Refused before the study is even read: "nope" does not exist, and the token is what is named.
    assert main(["best", "nope", "--storage", str(tmp_path / "runs"), "--push-to-hub", "me/model"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "needs a token with write access: set HF_TOKEN or run `hf auth login`" in out and "nothing was" in out
    with pytest.raises(reports.NoHubToken):
        reports.push_best("nope", "me/model", None, str(tmp_path / "runs"))
    assert hub.calls == []
    assert main(["best", "nope", "--storage", str(tmp_path / "runs"), "--private"]) == 2  # only with --push-to-hub


def test_a_bad_repo_id_is_refused_before_anything(hub, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert main(["best", "nope", "--storage", str(tmp_path / "runs"), "--push-to-hub", "me/bad--name"]) == 1
    assert "is not a hub repo id" in capsys.readouterr().out and hub.calls == []


def test_the_pushed_folder_is_the_export_and_loads(hub, study, tmp_path):
    record, rows = study
    best = rows[0].as_dict()
    steps = []
    pushed = reports.push_trial(record, best, rows, "me/syn-dpo", "hf_test_token", private=True, revision="sweep-1",
                                progress=steps.append)
    assert hub.calls == [
        ("create_repo", "me/syn-dpo", True, True, "hf_test_token"),
        ("create_branch", "me/syn-dpo", "sweep-1", True),
        ("upload_folder", "me/syn-dpo", "sweep-1", "prefsweep: best trial t00 of study syn"),
    ]
    assert pushed == {"repo_id": "me/syn-dpo", "revision": "sweep-1", "private": True, "trial_id": "t00",
                      "commit_url": "https://huggingface.co/me/syn-dpo/commit/abc"}
    assert any("exporting trial t00" in s for s in steps) and any("uploading" in s for s in steps)
    AutoModelForCausalLM.from_pretrained(hub.folder)
    AutoTokenizer.from_pretrained(hub.folder)
    card = (hub.folder / "README.md").read_text()
    assert "## Sweep" in card and "3 trials (3 finished)" in card  # the sweep summary
    assert "| 1 | t00 | finished | 0.95 | 0.2 | 6e-5 |" in card  # the top trials by the metric
    assert "| objective.beta | 0.2 | values 0.01, 0.1, 0.2, 0.5 |" in card  # winner's value, swept range
    assert "eval/rewards/accuracies" in card and "training_state.pt" not in {p.name for p in hub.folder.iterdir()}


def test_what_the_hub_says_is_passed_on(hub, study):
    record, rows = study
    response = httpx.Response(403, request=httpx.Request("POST", "https://huggingface.co/api/repos/create"))
    hub.refuse = HfHubHTTPError("403 Forbidden: you cannot write to org/x", response=response)
    with pytest.raises(reports.HubRefused, match=r"refused the push to org/x \(HTTP 403\)"):
        reports.push_trial(record, rows[0].as_dict(), rows, "org/x", "hf_test_token")
    hub.refuse = ConnectionError("Name or service not known")
    with pytest.raises(reports.HubPushError, match="could not reach the hub"):
        reports.push_trial(record, rows[0].as_dict(), rows, "org/x", "hf_test_token")
    assert [c[0] for c in hub.calls] == ["create_repo", "create_repo"]  # nothing uploaded


def test_a_service_pushes_only_with_its_own_token_and_namespaces(hub, tmp_path: Path):
    off = from_env({}, workdir=str(tmp_path))
    with pytest.raises(reports.NoHubToken, match="PREFSWEEP_HF_TOKEN"):
        reports.push_for_service(off, "syn", "me/x")
    on = from_env({"PREFSWEEP_HF_TOKEN": "hf_service", "PREFSWEEP_HF_NAMESPACES": "team, lab"}, workdir=str(tmp_path))
    assert on.hf_namespaces == ["team", "lab"] and "hf_service" not in repr(on)
    with pytest.raises(reports.NamespaceNotAllowed, match="only to team, lab"):
        reports.push_for_service(on, "syn", "me/x")
    with pytest.raises(reports.NamespaceNotAllowed):
        reports.push_for_service(on, "syn", "x")  # the token's own user: not listed
    assert hub.calls == []
