"""The `objective` section: which preference objective, and its hyperparameters."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from objectives.registry import get_objective, objective_names
from sweep.config.fields import Strict


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
