"""The one configuration model. Field descriptions here are the documentation: the CLI
(`prefsweep validate`), the REST API (OpenAPI schema) and the sweep driver all read this.
Sections with rules of their own live beside it (`objective.py`, `search.py`); every name is
importable from here.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from sweep.config.evaluation import GEN_PREFIX, EvaluationConfig, gen_metric_problem
from sweep.config.fields import MAX_BATCH, MAX_COUNT, MAX_TOKENS, LocalPath, Seed, Strict
from sweep.config.objective import ObjectiveConfig
from sweep.config.redact import mask
from sweep.config.search import OBJECTIVE_KEY, EarlyTerminate, MetricConfig, ParameterSpec, SweepConfig, values_of

__all__ = [
    "DataConfig", "DataSource", "EarlyTerminate", "EvaluationConfig", "LocalPath", "LoraConfig", "MetricConfig", "ModelConfig",
    "ObjectiveConfig", "ParameterSpec", "PrefsweepConfig", "ResourcesConfig", "StorageConfig", "Strict",
    "SweepConfig", "TrackingConfig", "TrainConfig", "path_fields", "resolve_storage_path",
]


class LoraConfig(Strict):
    r: int = Field(8, ge=1, le=MAX_BATCH, description="LoRA rank.")
    alpha: int = Field(16, ge=1, le=MAX_BATCH, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    target_modules: list[str] | None = Field(
        None, description="Module names to adapt; null lets PEFT pick the model type's default."
    )
    merge_on_export: bool = Field(
        True, description="Export merges the adapter into the base weights (else saves the adapter alone)."
    )


class ModelConfig(Strict):
    name_or_path: Annotated[str, LocalPath(hub_ok=True)] = Field(
        "builtin:tiny-gpt2-sft",
        description="Hugging Face hub id, local directory in HF layout, or a built-in offline model built "
        "deterministically on this machine: `builtin:tiny-gpt2` (random init) or `builtin:tiny-gpt2-sft` "
        "(the same, briefly fine-tuned on the demo's answers).",
    )
    ref_name_or_path: Annotated[str | None, LocalPath(hub_ok=True)] = Field(
        None, description="Reference model for KL-regularised objectives; null = same as `name_or_path`."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype. `auto`: float32 on CPU; bf16 autocast on CUDA."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub repository.")
    lora: LoraConfig | None = Field(None, description="Train LoRA adapters instead of all weights.")


class DataSource(Strict):
    path: Annotated[str | None, LocalPath(hub_ok=False)] = Field(
        None,
        description="Local file (.jsonl, .json, .csv, .parquet), a directory written by "
        "`datasets.Dataset.save_to_disk` or in hub layout, or a data set shipped with prefsweep: "
        "`builtin:demo/train`, `builtin:demo/eval`. A relative path in a config file resolves against "
        "that file's folder when it exists there, else against the working directory (through the REST "
        "service: its workdir, inside its data roots).",
    )
    hf: Annotated[str | None, LocalPath(hub_ok=True)] = Field(
        None, description="Hugging Face hub dataset name, e.g. `Dahoas/static-hh` (or a local directory "
        "in hub layout).")
    split: str = Field("train", description="Split to read from a hub dataset or a DatasetDict.")
    name: str | None = Field(None, description="Hub dataset configuration name.")
    limit: int | None = Field(None, ge=1, le=MAX_COUNT, description="Read only the first N rows (quick tries).")

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if (self.path is None) == (self.hf is None):
            raise ValueError("give exactly one of `path` or `hf`")
        return self

    def describe(self) -> str:
        return self.path if self.path is not None else f"hf:{self.hf}[{self.split}]"


class DataConfig(Strict):
    train: DataSource = Field(
        default_factory=lambda: DataSource(path="builtin:demo/train"), description="Training data."
    )
    eval: DataSource | None = Field(
        default_factory=lambda: DataSource(path="builtin:demo/eval"),
        description="Held-out evaluation data; null to carve it from train with `eval_fraction`.",
    )
    eval_fraction: float | None = Field(
        None, gt=0.0, lt=1.0, description="Fraction of train held out for evaluation when `eval` is null."
    )
    format: Literal["auto", "paired", "hh", "conversational", "unpaired"] = Field(
        "auto",
        description="`paired`: prompt/chosen/rejected text; `hh`: chosen/rejected transcripts sharing "
        "a prompt up to the last '\\n\\nAssistant:'; `conversational`: message lists rendered with the "
        "tokenizer's chat template; `unpaired`: text or prompt+completion with an accept/reject `label`. "
        "`auto` detects it from the columns.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Rename map from our column names to the file's, e.g. {prompt: question, chosen: good}.",
    )
    max_length: int = Field(512, ge=8, le=MAX_TOKENS, description="Maximum prompt+completion tokens per sequence.")
    max_prompt_length: int = Field(
        256, ge=1, le=MAX_TOKENS, description="Prompts longer than this keep their last tokens (left truncation)."
    )
    drop_invalid: bool = Field(
        False,
        description="Drop rows that are empty, non-string or missing a column, with a counted "
        "warning, instead of failing on the first one.",
    )

    @model_validator(mode="after")
    def _checks(self) -> DataConfig:
        if self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"max_prompt_length ({self.max_prompt_length}) must be < max_length ({self.max_length})"
            )
        if self.eval is not None and self.eval_fraction is not None:
            raise ValueError("give `eval` or `eval_fraction`, not both (set eval: null to use eval_fraction)")
        allowed = {"prompt", "chosen", "rejected", "completion", "text", "label", "messages", "response"}
        unknown = set(self.columns) - allowed
        if unknown:
            raise ValueError(f"columns: unknown target name(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        return self



class TrainConfig(Strict):
    learning_rate: float = Field(5.0e-5, gt=0.0, description="AdamW peak learning rate.")
    per_device_batch_size: int = Field(8, ge=1, le=MAX_BATCH, description="Examples (pairs or rows) per worker per step.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=MAX_BATCH, description="Micro-batches per optimizer step.")
    max_steps: int = Field(200, ge=1, le=MAX_COUNT, description="Optimizer steps.")
    warmup_steps: int = Field(0, ge=0, le=MAX_COUNT, description="Linear warm-up steps, then linear decay to 0.")
    eval_every: int = Field(50, ge=1, le=MAX_COUNT, description="Evaluate, report and checkpoint every N steps.")
    seed: Seed = Field(0, description="Seed for model init of LoRA, data order and dropout.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(1.0, gt=0.0, description="Gradient clipping; null disables it.")
    eval_batch_size: int | None = Field(None, ge=1, le=MAX_BATCH, description="Batch size for evaluation; null = train's.")
    logging_steps: int = Field(10, ge=1, le=MAX_COUNT, description="Log training metrics every N steps.")
    reference_cache: bool = Field(
        True,
        description="Compute the frozen reference model's log-probs of the train and eval rows once per "
        "study (one entry per tokenization setting) and share them with every trial, instead of running a "
        "reference model in each. Used where the reference is frozen and per-row: the DPOTrainer losses (dpo, "
        "sigmoid, ipo, ...), pmpo with kl_estimator=sample, and kto's matched rows (its mismatched KL rows stay "
        "live); ignored for reference-free objectives, pmpo's exact KL, LD-DPO (ld_alpha) and a reference that "
        "moves (sync_ref_model, ema_tau).",
    )
    group_by_length: bool = Field(
        True,
        description="Batch rows of similar length (shuffled within length buckets, deterministic per seed "
        "and epoch, split across DDP ranks) so padding each batch to its longest row wastes little work; "
        "false = uniform shuffling.",
    )
    compile: bool = Field(
        False,
        description="torch.compile the policy. The first steps pay for compilation (and each new batch "
        "shape may recompile); pays off on long GPU runs.",
    )


class ResourcesConfig(Strict):
    num_workers: int = Field(1, ge=1, le=MAX_BATCH, description="DDP workers per trial.")
    use_gpu: bool = Field(False, description="Train on GPUs (`gpus_per_worker` each).")
    cpus_per_worker: float = Field(1, gt=0, le=MAX_BATCH, description="CPUs reserved per worker.")
    gpus_per_worker: float = Field(
        1.0, gt=0, le=1,
        description="GPUs reserved per worker with `use_gpu: true` (a DDP worker drives one). Below 1, several "
        "trials share one GPU "
        "(0.25: four small trials at once, with `sweep.max_concurrent_trials` to match); their memory is "
        "not partitioned, so they must fit together. A fraction needs `num_workers: 1` (two DDP workers "
        "of one trial on one GPU is something NCCL refuses).",
    )

    @field_validator("gpus_per_worker")
    @classmethod
    def _gpus(cls, gpus: float, info: ValidationInfo) -> float:
        # use_gpu and num_workers come first in the section, so they are validated by now
        if gpus != 1.0 and not info.data.get("use_gpu", False):
            raise ValueError("set but resources.use_gpu is false: set use_gpu: true to train on GPUs")
        if gpus < 1 and info.data.get("num_workers", 1) > 1:
            raise ValueError(f"{gpus} < 1 needs num_workers: 1 (DDP workers of one trial would share a GPU, "
                             "which NCCL refuses); use whole GPUs for multi-worker trials")
        return gpus

    def gpus(self) -> float:
        """GPUs each worker reserves (0 on CPU)."""
        return self.gpus_per_worker if self.use_gpu else 0.0



class TrackingConfig(Strict):
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; null = $MLFLOW_TRACKING_URI or SQLite under storage.path."
    )
    experiment: str = Field("prefsweep", description="MLflow experiment name.")


class StorageConfig(Strict):
    path: str = Field(
        "runs",
        description="Where studies keep checkpoints, Tune state and default databases: a local or "
        "shared directory, or an s3:// / gs:// URI.",
    )
    optuna_url: str | None = Field(
        None, description="SQLAlchemy URL of the Optuna storage; null = SQLite under storage.path."
    )


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # always fullmatch: `$` also matches before "\n"
# What storage.path holds besides study directories (sweep.storage.record's layout): a study of one of
# these names would write its directory over the shared databases.
OPTUNA_DB, MLFLOW_DB, MLFLOW_ARTIFACTS, REFCACHE = "optuna.db", "mlflow.db", "mlartifacts", "refcache"
RESERVED_NAMES = frozenset({MLFLOW_ARTIFACTS, REFCACHE, *(db + side for db in (OPTUNA_DB, MLFLOW_DB)
                                                          for side in ("", "-journal", "-wal", "-shm", ".lock"))})


class PrefsweepConfig(Strict):
    # Notes from reading a config file (relative paths resolved beside it), for `validate`.
    _resolved_paths: list[str] = PrivateAttr(default_factory=list)

    name: str = Field("demo", description="Study name: unique per storage; letters, digits, . _ -.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    evaluation: EvaluationConfig | None = Field(
        None, description="Generation-based evaluation of each trial (eval/gen/* metrics); null: none.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError("use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        if name.lower() in RESERVED_NAMES:  # lower: case-insensitive file systems (macOS)
            raise ValueError(f"{name!r} is the name of a file the storage keeps for every study; choose another")
        return name

    @model_validator(mode="after")
    def _moving_reference_needs_full_weights(self) -> PrefsweepConfig:
        moving = self.objective.resolved().moving_reference(self.objective)
        if moving is not None and self.model.lora is not None:
            # With LoRA the reference is the base model with the adapters off: no weights of its own to move.
            raise ValueError(f"objective: the reference moves ({moving.why}), which needs full fine-tuning; "
                             "model.lora is set")
        return self

    @model_validator(mode="after")
    def _generation_metrics_are_evaluated(self) -> PrefsweepConfig:
        sweep, evaluation = self.sweep, self.evaluation
        for where, name in sweep.named_metrics():
            if problem := gen_metric_problem(name, evaluation):
                raise ValueError(f"{where}: {problem}")
        first = sweep.metric.name
        if first.startswith(GEN_PREFIX) and evaluation is not None and evaluation.every != "eval":
            # Tune and ASHA read the first metric in every report, not only the last.
            raise ValueError(f"sweep.metric {first!r} is read at every evaluation: set evaluation.every: eval")
        return self

    def objectives_in_play(self) -> list[str | list[str]]:
        """The objective names trials may use (a list is a mixture)."""
        return values_of(self.sweep.parameters, OBJECTIVE_KEY) or [self.objective.name]

    def resolved_storage(self) -> str:
        return resolve_storage_path(self.storage.path)

    def public(self) -> dict[str, Any]:
        """The config as JSON data with URL passwords masked: what may be shown, logged or
        published (MLflow, model cards, checkpoints). Run-time files use model_dump."""
        return mask(self.model_dump(mode="json"))


def path_fields(model: type[BaseModel] = PrefsweepConfig, prefix: str = "") -> list[tuple[str, LocalPath]]:
    """(dotted key, marker) of every field marked LocalPath, through nested sections."""
    found = []
    for name, info in model.model_fields.items():
        marker = next((m for m in info.metadata if isinstance(m, LocalPath)), None)
        if marker is not None:
            found.append((prefix + name, marker))
        for arg in getattr(info.annotation, "__args__", (info.annotation,)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                found.extend(path_fields(arg, f"{prefix}{name}."))
    return found


def resolve_storage_path(path: str) -> str:
    if "://" in path:
        return path.rstrip("/")
    return str(Path(path).expanduser().resolve())
