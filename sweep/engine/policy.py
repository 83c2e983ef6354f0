"""Building the trainable policy and its reference for one worker."""
from __future__ import annotations

from torch import Tensor, nn

from objectives.registry import Objective
from sweep.config.schema import PrefsweepConfig
from sweep.engine.reference import Reference
from sweep.models.loading import load_causal_lm


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _apply_lora(model: nn.Module, cfg: PrefsweepConfig, resume_dir: str | None) -> nn.Module:
    from peft import LoraConfig, PeftModel, get_peft_model

    if resume_dir is not None:
        return PeftModel.from_pretrained(model, resume_dir, is_trainable=True)
    lora = cfg.model.lora
    return get_peft_model(model, LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    ))


def build_policy(cfg: PrefsweepConfig, device, resume_dir: str | None = None) -> nn.Module:
    """Full fine-tuning resumes from the checkpoint's weights; LoRA reloads the base model
    and the checkpoint's adapter."""
    source = resume_dir if resume_dir is not None and cfg.model.lora is None else cfg.model.name_or_path
    model = load_causal_lm(source, dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code)
    if cfg.model.lora is not None:
        model = _apply_lora(model, cfg, resume_dir)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.model.lora is not None:
            model.enable_input_require_grads()
    model = model.to(device)
    if cfg.train.compile:
        # In place (nn.Module.compile): parameter names, save_pretrained and DDP wrapping are
        # unchanged. Batch widths vary, so shapes are dynamic after the first recompile.
        model.compile()
    return model


def build_reference(cfg: PrefsweepConfig, objective: Objective, policy: nn.Module, device,
                    cached_ref: Tensor | None = None) -> Reference | None:
    if not objective.needs_reference:
        return None
    if not objective.reference_cache(cfg.objective)[0]:
        cached_ref = None
    # A live model serves what the cache cannot (KTO's in-batch KL rows), the cache the rest.
    if not objective.needs_live_reference(cfg.objective, cached=cached_ref is not None):
        return Reference(cached=cached_ref)
    if cfg.model.lora is not None and cfg.model.ref_name_or_path is None:
        return Reference(adapter_host=policy, cached=cached_ref)  # base weights with adapters off: no second copy
    ref = load_causal_lm(cfg.model.ref_name_or_path or cfg.model.name_or_path, dtype=cfg.model.dtype,
                         trust_remote_code=cfg.model.trust_remote_code)
    ref.requires_grad_(False)
    return Reference(model=ref.eval().to(device), cached=cached_ref)


def build_policy_and_reference(cfg: PrefsweepConfig, objective: Objective, device, checkpoint,
                               cached_ref: Tensor | None = None) -> tuple[nn.Module, Reference | None]:
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            policy = build_policy(cfg, device, resume_dir=directory)
    else:
        policy = build_policy(cfg, device)
    return policy, build_reference(cfg, objective, policy, device, cached_ref)
