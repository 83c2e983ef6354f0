"""Exporting a checkpoint as a Hugging Face model directory with a model card, ready for
`from_pretrained` and `push_to_hub`."""
from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray.train

from sweep.config.loading import get_dotted
from sweep.config.schema import PrefsweepConfig
from sweep.engine.checkpoints import INFO_FILE, STATE_FILE
from sweep.study.summary import summary_sentence, top_table


def export_checkpoint(checkpoint_path: str, out_dir: str | Path, cfg: PrefsweepConfig,
                      metrics: dict[str, Any], trials: Sequence[dict[str, Any]] = ()) -> Path:
    """`trials` (TrialRow dicts): the sweep, summarised in the model card."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prefsweep-export-") as tmp:
        # Checkpoint.to_directory fetches from local disk or s3:// / gs:// alike.
        local = Path(ray.train.Checkpoint(checkpoint_path).to_directory(tmp))
        if cfg.model.lora is not None and cfg.model.lora.merge_on_export:
            _merge_adapter(local, out, cfg)
        else:
            for item in local.iterdir():
                if item.name in (STATE_FILE,):
                    continue
                target = out / item.name
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, target)
    (out / "README.md").write_text(model_card(cfg, metrics, trials))
    return out


def _merge_adapter(adapter_dir: Path, out: Path, cfg: PrefsweepConfig) -> None:
    from peft import PeftModel
    from transformers import AutoTokenizer

    from sweep.models.loading import load_causal_lm

    base = load_causal_lm(cfg.model.name_or_path, dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(out)
    if (adapter_dir / INFO_FILE).is_file():
        shutil.copy2(adapter_dir / INFO_FILE, out / INFO_FILE)


def _search_range(spec) -> str:
    if spec.kind == "categorical":
        return "values " + ", ".join(str(v) for v in spec.values)
    step = f", step {spec.q}" if spec.q else ""
    return f"{spec.kind} {spec.min:g} .. {spec.max:g}{step}"


def model_card(cfg: PrefsweepConfig, metrics: dict[str, Any], trials: Sequence[dict[str, Any]] = ()) -> str:
    data = [cfg.data.train.describe()] + ([cfg.data.eval.describe()] if cfg.data.eval else [])
    hub_data = [s.hf for s in (cfg.data.train, cfg.data.eval) if s is not None and s.hf]
    base = cfg.model.name_or_path
    front = ["---", "library_name: transformers", "tags:", "- prefsweep", f"- {cfg.objective.label}",
             "- preference-optimization"]
    if not base.startswith("builtin:"):
        front.append(f"base_model: {base}")
    if hub_data:
        front += ["datasets:"] + [f"- {d}" for d in hub_data]
    front.append("---")
    hp = {**{f"objective.{k}": v for k, v in cfg.objective.model_dump().items()},
          **{f"train.{k}": v for k, v in cfg.train.model_dump().items()}}
    swept = {k: _search_range(s) for k, s in cfg.sweep.parameters.items() if s.kind != "constant"}
    dumped = cfg.model_dump(mode="json")
    hp.update({k: get_dotted(dumped, k) for k in swept if k not in hp})
    lines = front + [
        f"# {cfg.name}",
        "",
        f"Fine-tuned from `{base}` with the **{cfg.objective.label}** objective by prefsweep "
        f"(best trial of study `{cfg.name}`, chosen on `{cfg.sweep.metric.name}`, {cfg.sweep.metric.goal}).",
        f"When the study finished, this model was registered in MLflow as `{cfg.name}` with the alias "
        "`champion`.",
        "",
        "## Data",
        *[f"- {d}" for d in data],
        f"- format `{cfg.data.format}`, max_length {cfg.data.max_length}, max_prompt_length {cfg.data.max_prompt_length}",
        "",
        "## Hyperparameters",
        f"{len(swept)} swept by the study (the winner's value, then the range searched); the rest fixed.",
        "",
        "| name | value | swept over |", "|---|---|---|",
        *[f"| {k} | {v} | {swept.get(k, '')} |" for k, v in sorted(hp.items(), key=lambda kv: kv[0] not in swept)],
        "",
        *(["## Sweep", summary_sentence(cfg, trials), "", *top_table(cfg, trials, k=5), ""] if trials else []),
        "## Metrics (last evaluation)",
        "| metric | value |", "|---|---|",
        *[f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(metrics.items())],
        "",
        "## Use",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "model = AutoModelForCausalLM.from_pretrained(PATH)",
        "tokenizer = AutoTokenizer.from_pretrained(PATH)",
        "```",
        "",
        "Full config:",
        "```json",
        json.dumps(cfg.public(), indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
