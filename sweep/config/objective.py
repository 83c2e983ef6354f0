"""The `objective` section: which preference objective (or mixture of them), and its hyperparameters."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from objectives.registry import Objective, objective_names, objective_of
from sweep.config.fields import MAX_COUNT, Strict


class ObjectiveConfig(Strict):
    name: str | Annotated[list[str], Field(max_length=16)] = Field(
        "dpo", description="Objective, one of: " + ", ".join(objective_names()) + " (TRL's loss_type names "
        "included; the registry in objectives/ says what each needs and reads), or a list of paired ones "
        "combined as TRL combines a loss_type list, weighted by `loss_weights` (e.g. MPO = [sigmoid, bco_pair, "
        "sft] with [0.8, 0.2, 1.0]; RPO = [sigmoid, sft]).")
    loss_weights: Annotated[list[Annotated[float, Field(ge=0.0)]], Field(max_length=16)] | None = Field(
        None, description="With a list of names: one weight each (TRL's loss_weights); null = 1.0 each. The "
        "loss is sum_k weight_k * mean loss_k; the metrics are the first objective's.")
    beta: float = Field(0.1, ge=0.0, description="Strength of the KL / reference regularisation.")
    alpha: float = Field(
        0.5, ge=0.0, le=1.0, description="PMPO: weight of accepted rows (1 - alpha on rejected rows)."
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=0.5,
        description="dpo (cDPO), robust, simpo, aot, aot_unpaired: assumed rate of flipped preference labels; "
        "exo_pair: the label's epsilon (must be > 0; the EXO paper uses 1e-3).",
    )
    gamma: float = Field(0.5, description="SimPO: target reward margin (TRL's simpo_gamma); not read when "
                         "`gamma_beta_ratio` is set.")
    gamma_beta_ratio: float | None = Field(
        None, ge=0.0, description="SimPO: the margin as a share of beta (gamma = gamma_beta_ratio * beta), the "
        "SimPO paper's parameterisation (0.1-0.8 works across betas); null = use `gamma`.")
    kl_estimator: Literal["exact", "sample"] = Field(
        "sample",
        description="PMPO: `exact` = per-token categorical KL(pi_ref||pi) over the vocabulary (needs a "
        "live reference model); `sample` = estimate from the sequences' log-prob ratios (works from "
        "cached reference log-probs).",
    )
    desirable_weight: float = Field(1.0, gt=0.0, description="KTO: weight of accepted rows.")
    undesirable_weight: float = Field(1.0, gt=0.0, description="KTO: weight of rejected rows.")
    f_divergence_type: Literal["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"] = Field(
        "reverse_kl", description="f-DPO: the divergence to the reference (TRL's f_divergence_type). Taken by the "
        "losses of the chosen-rejected margin only: dpo, sigmoid, sigmoid_norm, hinge, ipo, exo_pair, robust, "
        "discopop (and sft, where it changes nothing).")
    f_alpha_divergence_coef: float = Field(
        0.5, ge=0.0, le=1.0, description="f-DPO with alpha_divergence: its alpha (1 = reverse KL, 0 = forward KL).")
    use_weighting: bool = Field(
        False, description="WPO: weight each pair by the policy's length-normalised probability of both "
        "completions (no gradient through the weight). Not for aot/aot_unpaired, whose sorting breaks the pairs.")
    ld_alpha: float | None = Field(
        None, ge=0.0, le=1.0, description="LD-DPO: weight of the log-probs of tokens past the shorter completion's "
        "length (1 = plain DPO, 0 = only the shared length counts); null = off. Needs a live reference model.")
    discopop_tau: float = Field(0.05, gt=0.0, description="DiscoPOP: temperature of its log-ratio modulation.")
    sync_ref_model: bool = Field(
        False, description="TR-DPO: move the reference towards the policy every `ref_model_sync_steps` optimizer "
        "steps (DPO-family objectives and kto; full fine-tuning only). Needs a live reference model.")
    ref_model_mixup_alpha: float = Field(
        0.6, gt=0.0, le=1.0, description="TR-DPO: reference = alpha * policy + (1 - alpha) * reference at each sync "
        "(1 = hard sync, a copy of the policy).")
    ref_model_sync_steps: int = Field(512, ge=1, le=MAX_COUNT, description="TR-DPO: optimizer steps between syncs.")
    ema_tau: float | None = Field(
        None, gt=0.0, le=1.0, description="PMPO: the reference becomes an EMA of the policy, reference = "
        "(1 - ema_tau) * reference + ema_tau * policy after every optimizer step (full fine-tuning only); "
        "null = a frozen reference.")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str | list[str]) -> str | list[str]:
        names = [name] if isinstance(name, str) else name
        if not names:
            raise ValueError("give at least one objective name")
        unknown = [n for n in names if n not in objective_names()]
        if unknown:
            raise ValueError(f"unknown objective {', '.join(map(repr, unknown))}; known: {', '.join(objective_names())}")
        return name

    @model_validator(mode="after")
    def _fits_objective(self) -> ObjectiveConfig:
        count = 1 if isinstance(self.name, str) else len(self.name)
        if self.loss_weights is not None and len(self.loss_weights) != count:
            raise ValueError(f"loss_weights: {len(self.loss_weights)} weights for {count} objective name(s)")
        try:
            objective = self.resolved()
        except ValueError as err:  # a mixture that cannot be (unpaired parts)
            raise ValueError(f"name: {err}") from None
        problems = objective.problems(self)
        if problems:
            raise ValueError("; ".join(f"{field}: {message}" for field, message in problems))
        return self

    def resolved(self) -> Objective:
        """The registry's objective for this section (a mixture for a list of names)."""
        return objective_of(self)

    @property
    def label(self) -> str:
        """The objective's name for people: `dpo`, or `sigmoid+sft` for a mixture."""
        return self.name if isinstance(self.name, str) else "+".join(self.name)
