"""The one configuration model. Field descriptions here are the documentation: the CLI
(`prefsweep validate`), the REST API (OpenAPI schema) and the sweep driver all read this.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from objectives.registry import get_objective, objective_names
from sweep.config.redact import mask

# Upper bounds on counts: a value past them is a typo or an attack, and some (2**64 steps, a
# seed numpy cannot take) would only fail deep inside a running sweep.
MAX_COUNT = 100_000_000      # steps, evaluations, rows
MAX_BATCH = 65_536           # examples per batch, micro-batches, workers, LoRA rank
MAX_TOKENS = 1_048_576       # sequence lengths
MAX_SEED = 2**32 - 1         # numpy's seed range; torch and Python take it too
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class Strict(BaseModel):
    # allow_inf_nan=False: every float field of every section refuses NaN and +-inf (YAML
    # .nan/.inf, JSON NaN/Infinity), named by its dotted path like any other bad value.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LocalPath:
    """Field metadata: the value may name something on this machine's disk; `hub_ok`: or a
    Hugging Face hub id (which the hub libraries also try as a local directory first). The REST
    service applies its one path rule to every field marked so (see `path_fields`)."""

    def __init__(self, hub_ok: bool):
        self.hub_ok = hub_ok


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
        "builtin:tiny-gpt2",
        description="Hugging Face hub id, local directory in HF layout, or `builtin:tiny-gpt2` "
        "(a small GPT-2 built deterministically on this machine, for offline use).",
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


class ObjectiveConfig(Strict):
    name: str = Field("dpo", description="Objective, one of: " + ", ".join(objective_names())
                      + " (the registry in objectives/ says what each needs and reads).")
    beta: float = Field(0.1, ge=0.0, description="Strength of the KL / reference regularisation.")
    alpha: float = Field(
        0.5, ge=0.0, le=1.0, description="PMPO: weight of accepted rows (1 - alpha on rejected rows)."
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=0.5, description="DPO/robust/SimPO: assumed rate of flipped preference labels."
    )
    gamma: float = Field(0.5, description="SimPO: target reward margin (TRL's simpo_gamma).")
    kl_estimator: Literal["exact", "sample"] = Field(
        "sample",
        description="PMPO: `exact` = per-token categorical KL(pi_ref||pi) over the vocabulary (needs a "
        "live reference model); `sample` = estimate from the sequences' log-prob ratios (works from "
        "cached reference log-probs).",
    )
    desirable_weight: float = Field(1.0, gt=0.0, description="KTO: weight of accepted rows.")
    undesirable_weight: float = Field(1.0, gt=0.0, description="KTO: weight of rejected rows.")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in objective_names():
            raise ValueError(f"unknown objective {name!r}; known: {', '.join(objective_names())}")
        return name

    @model_validator(mode="after")
    def _beta_positive(self) -> ObjectiveConfig:
        if self.beta == 0.0 and not get_objective(self.name).zero_beta_ok:
            raise ValueError(f"beta must be > 0 for {self.name}")
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
        "reference model in each. Used where the reference is frozen and per-row: dpo, ipo, hinge, robust, "
        "pmpo with kl_estimator=sample, and kto's matched rows (its mismatched KL rows stay live); ignored "
        "for reference-free objectives and pmpo's exact KL.",
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
    use_gpu: bool = Field(False, description="One GPU per worker.")
    cpus_per_worker: float = Field(1, gt=0, le=MAX_BATCH, description="CPUs reserved per worker.")


class MetricConfig(Strict):
    name: str = Field("eval/rewards/accuracies", description="Metric the sweep optimises.")
    goal: Literal["maximize", "minimize"] = Field("maximize", description="Direction of improvement.")

    @property
    def mode(self) -> str:
        return "max" if self.goal == "maximize" else "min"


class EarlyTerminate(Strict):
    type: Literal["asha"] = Field("asha", description="Early-stopping scheduler (Tune's ASHA).")
    grace_period: int = Field(1, ge=1, le=MAX_COUNT, description="Evaluations a trial always gets before it may be stopped.")
    reduction_factor: float = Field(2, gt=1, le=MAX_BATCH, description="ASHA keeps 1/reduction_factor of trials per rung.")


Distribution = Literal[
    "constant", "categorical", "uniform", "int_uniform", "q_uniform", "log_uniform_values",
    "q_log_uniform_values",
]


class ParameterSpec(Strict):
    """One swept parameter, in W&B sweep vocabulary."""

    values: list[Any] | None = Field(None, description="Categorical choices.")
    value: Any | None = Field(None, description="A constant.")
    distribution: Distribution | None = Field(
        None, description="A distribution between `min` and `max`; `log_uniform_values` samples on a log scale."
    )
    min: float | None = Field(None, description="Lower bound of the distribution.")
    max: float | None = Field(None, description="Upper bound of the distribution.")
    q: float | None = Field(None, gt=0, description="Step for q_ distributions.")

    @model_validator(mode="after")
    def _shape(self) -> ParameterSpec:
        kind = self.kind
        if kind in ("categorical",) and not self.values:
            raise ValueError("`values` must be a non-empty list")
        if kind in ("uniform", "int_uniform", "q_uniform", "log_uniform_values", "q_log_uniform_values"):
            if self.min is None or self.max is None:
                raise ValueError(f"distribution {kind} needs `min` and `max`")
            if not self.min < self.max:
                raise ValueError(f"min ({self.min}) must be < max ({self.max})")
            if "log" in kind and self.min <= 0:
                raise ValueError(f"distribution {kind} needs min > 0")
            if kind.startswith("q_") and self.q is None:
                raise ValueError(f"distribution {kind} needs `q`")
        if kind == "constant" and self.value is None:
            raise ValueError("give `values`, `value` or `distribution`")
        return self

    @property
    def kind(self) -> str:
        if self.distribution is not None:
            return self.distribution
        if self.values is not None:
            return "categorical"
        return "constant"

    def edge_values(self) -> list[Any]:
        """Values that must each yield a valid config (checked before any trial starts)."""
        kind = self.kind
        if kind == "categorical":
            return list(self.values or [])
        if kind == "constant":
            return [self.value]
        if kind == "int_uniform":
            return [int(self.min), int(self.max)]
        return [self.min, self.max]


def _default_parameters() -> dict[str, ParameterSpec]:
    return {
        "objective.beta": ParameterSpec(values=[0.01, 0.1, 0.2, 0.5]),
        "train.learning_rate": ParameterSpec(distribution="log_uniform_values", min=1.0e-6, max=1.0e-3),
        "train.per_device_batch_size": ParameterSpec(values=[2, 4, 8]),
        "train.gradient_accumulation_steps": ParameterSpec(values=[1, 2, 4]),
    }


class SweepConfig(Strict):
    method: Literal["bayes", "random", "grid"] = Field(
        "bayes", description="`bayes`: Optuna TPE; `random`: Optuna random sampler; `grid`: every combination."
    )
    metric: MetricConfig = Field(default_factory=MetricConfig)
    num_trials: int = Field(8, ge=1, le=MAX_BATCH,
                            description="Trials to run (for grid: at most this many of its combinations).")
    max_concurrent_trials: int = Field(1, ge=1, le=MAX_BATCH, description="Trials running at once.")
    early_terminate: EarlyTerminate | None = Field(
        default_factory=EarlyTerminate, description="ASHA early stopping; null disables it."
    )
    parameters: dict[str, ParameterSpec] = Field(
        default_factory=_default_parameters,
        description="Swept parameters keyed by dotted config path, e.g. `train.learning_rate`.",
    )
    seed: Seed = Field(0, description="Seed of the search algorithm: same seed, same proposals.")
    max_retries: int = Field(
        2, ge=0, le=100, description="Times a trial whose worker died restarts from its last checkpoint."
    )


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

    def objectives_in_play(self) -> list[str]:
        spec = self.sweep.parameters.get("objective.name")
        if spec is None:
            return [self.objective.name]
        return [str(v) for v in spec.edge_values()]

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
