"""Service settings, read once from the environment (PREFSWEEP_* variables).

Every filesystem location is resolved to an absolute path here, so nothing below depends on
the working directory of whoever later reads a stored value (Ray job drivers do not share it).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator

ENV_PREFIX = "PREFSWEEP_"


class Settings(BaseModel):
    api_token: str | None = Field(
        None, description="Bearer token for mutating routes and generation (PREFSWEEP_API_TOKEN).")
    data_dir: Path = Field(
        Path("runs/.api"), description="Service files: the SQLite database, submitted configs, "
        "exported best checkpoints. The leading dot keeps it apart from study directories.")
    db_url: str | None = Field(
        None, description="SQLAlchemy URL of the studies table; null = SQLite in data_dir. "
        "Postgres: postgresql+psycopg://user:pw@host/db.")
    storage_path: str = Field(
        "runs", description="storage.path every study launched through the API runs with.")
    optuna_url: str | None = Field(None, description="storage.optuna_url for API studies (null = SQLite).")
    mlflow_tracking_uri: str | None = Field(
        None, description="tracking.mlflow_tracking_uri for API studies (null = SQLite under storage).")
    mlflow_ui_url: str | None = Field(
        None, description="Base URL of an MLflow UI; study pages then link to the parent run.")
    ray_address: str | None = Field(
        None, description="Ray dashboard (Jobs API) address, e.g. http://head:8265. Unset: attach "
        "to a local Ray on local_ray_dashboard_port, starting one (`ray start --head`) if none runs.")
    local_ray_dashboard_port: int = 8265
    ray_auth_token: str | None = Field(
        None, description="Ray cluster token; unset = $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or "
        "~/.ray/auth_token (where `ray start`/`ray.init` keep it).")
    job_command: str | None = Field(
        None, description="Command a Ray job runs (then ` run CONFIG`); unset = this Python's "
        "`-m sweep`. Set `prefsweep` for a cluster whose nodes have it on PATH.")
    workdir: Path = Field(Path("."), description="Base of relative data paths in submitted configs.")
    data_roots: list[Path] = Field(
        default_factory=lambda: [Path("data")],
        description="Directories configs may read data and local models from (PREFSWEEP_DATA_ROOTS, "
        "separated by the OS path separator); relative entries are under workdir.")
    allow_trust_remote_code: bool = False
    allow_python_judges: bool = Field(
        False, description="Accept `evaluation.judge: {python: module:function}` in submitted configs: "
        "it imports and runs that code on the cluster.")
    max_running_studies: int = Field(2, ge=0, description="Studies pending or running at once; 429 past it.")
    max_prompt_chars: int = Field(2000, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    max_cached_models: int = Field(2, ge=1)
    hf_token: SecretStr | None = Field(
        None, description="Hugging Face token with write access: POST /studies/{id}/best pushes the best model "
        "with it. Unset: pushing is off (403). Never taken from a request, never in a response or log.")
    hf_namespaces: list[str] = Field(
        default_factory=list, description="Hub users/organisations that pushes may write to "
        "(PREFSWEEP_HF_NAMESPACES, comma-separated); empty: any the token can write to.")

    @field_validator("hf_namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value):
        if isinstance(value, str):
            return [n.strip() for n in value.split(",") if n.strip()]
        return value

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value):
        if isinstance(value, str):
            return [p for p in value.split(os.pathsep) if p.strip()]
        return value

    def model_post_init(self, _context) -> None:
        self.workdir = self.workdir.expanduser().resolve()
        self.data_dir = (self.workdir / self.data_dir.expanduser()).resolve()
        self.data_roots = [(self.workdir / r.expanduser()).resolve() for r in self.data_roots]
        if "://" not in self.storage_path:
            self.storage_path = str((self.workdir / Path(self.storage_path).expanduser()).resolve())

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'prefsweep-api.db'}"

    @property
    def configs_dir(self) -> Path:
        return self.data_dir / "configs"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    def ensure_token(self) -> tuple[str, bool]:
        """The API token: the configured one, else one generated once and kept (mode 0600)
        in data_dir/api_token. Returns (token, generated_here)."""
        if self.api_token:
            return self.api_token, False
        path = self.data_dir / "api_token"
        if path.is_file():
            self.api_token = path.read_text().strip()
            return self.api_token, False
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        self.api_token = token
        return token, True


_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
         "off": False, "": False}


def from_env(environ: dict[str, str] | None = None, **overrides) -> Settings:
    """Settings from PREFSWEEP_<FIELD> variables (upper case), then explicit overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, field in Settings.model_fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None or not raw.strip():
            continue  # unset and empty mean the same: the default
        if field.annotation is bool:
            if raw.strip().lower() not in _BOOL:
                raise ValueError(f"{ENV_PREFIX}{name.upper()}: expected true/false, got {raw!r}")
            values[name] = _BOOL[raw.strip().lower()]
        else:
            values[name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
