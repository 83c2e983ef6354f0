"""Loading causal LMs and their tokenizers from a hub id, a local HF-layout directory or a
built-in model (`builtin:tiny-gpt2`, see `sweep.models.builtin`).

dtype `auto` means float32 on CPU (CPU kernels for half types are slow and numerically
poor) and, on an accelerator, the dtype the checkpoint was saved in (float32 when its config
does not say). Mixed precision on top of that (bf16 autocast) is the trainer's business.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from sweep.models.builtin import BUILTIN_MODELS, BUILTIN_PREFIX, builtin_path, is_builtin
from sweep.models.hub import HubUnavailable, model_cached, require_hub


class ModelLoadError(ValueError):
    """A model or tokenizer that cannot be loaded, with what to do about it."""


Dtype = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")


def resolve_model_path(name_or_path: str) -> str:
    """Builtin name -> its cache dir; existing local dir -> absolute path; else a hub id."""
    name_or_path = str(name_or_path)
    if is_builtin(name_or_path):
        return str(builtin_path(name_or_path))
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return str(local.resolve())
    if looks_like_path(name_or_path):
        raise ModelLoadError(f"model directory {name_or_path!r} does not exist")
    try:
        require_hub("model", name_or_path, cached=model_cached(name_or_path))
    except HubUnavailable as err:
        builtins = ", ".join(BUILTIN_PREFIX + m for m in BUILTIN_MODELS)
        raise ModelLoadError(f"{err} or a built-in model ({builtins})") from None
    return name_or_path


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False):
    """AutoTokenizer with a pad token (EOS when the checkpoint has none) and right padding."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise _load_error(name_or_path, path, "tokenizer", err) from err
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"tokenizer of {name_or_path!r} has neither a pad nor an EOS token; "
                "batches cannot be padded"
            )
        tokenizer.pad_token = tokenizer.eos_token
    # Right padding keeps every sequence's tokens at the same positions as unpadded, which
    # the log-prob gathering relies on; generation code that needs left padding sets it itself.
    tokenizer.padding_side = "right"
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    *,
    dtype: Dtype = "auto",
    trust_remote_code: bool = False,
    device: Any = None,
):
    """AutoModelForCausalLM in the requested dtype, moved to `device` (None: stays on CPU).

    Uses PyTorch SDPA attention where the architecture supports it, else its default.
    The model is returned as `from_pretrained` leaves it: in eval mode.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    path = resolve_model_path(name_or_path)
    kwargs = {"dtype": _torch_dtype(dtype, device), "trust_remote_code": trust_remote_code}
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError):
            # The architecture has no SDPA path. Any other cause raises again right here.
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise _load_error(name_or_path, path, "model", err) from err
    if device is not None:
        model.to(torch.device(device))
    return model


def _torch_dtype(dtype: str, device: Any):
    import torch

    if dtype == "auto":
        on_cpu = device is None or torch.device(device).type == "cpu"
        return torch.float32 if on_cpu else "auto"
    return getattr(torch, dtype)


def looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else with path syntax was meant as a
    # local directory, and a "not on the hub" error would only mislead.
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name


def _load_error(name_or_path: str, path: str, what: str, err: OSError) -> ModelLoadError:
    if Path(path).is_dir():
        return ModelLoadError(f"cannot load the {what} of {name_or_path!r} from local directory {path}: {err}")
    builtins = ", ".join(BUILTIN_PREFIX + m for m in BUILTIN_MODELS)
    return ModelLoadError(
        f"cannot load the {what} {name_or_path!r}: it is not a local directory, and the "
        f"Hugging Face hub is unreachable (offline?) or has no such repository, nor is it in "
        f"the local HF cache. Use a local directory in HF layout or a built-in model "
        f"({builtins}). Cause: {err}"
    )
