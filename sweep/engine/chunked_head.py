"""Log-probs of chosen tokens through the LM head, a slice of positions at a time, so the
vocabulary projection never holds [tokens x vocab] floats at once.

For K completion tokens with hidden states h [K, H], head weight W [V, H] (bias b [V]) and
labels y [K]:

    z_k = W h_k + b,   log p(y_k) = z_k[y_k] - logsumexp(z_k)

and, for an upstream gradient g_k of each value,

    dL/dz_k = g_k (onehot(y_k) - softmax(z_k)),   dL/dh_k = W^T dL/dz_k,   dL/dW = sum_k dL/dz_k h_k^T.

Autograd through the plain expression keeps z, its float copy, exp(z - lse) and the gather's
scatter alive: three or four [K, V] tensors. Here the forward keeps only lse [K], and the
backward recomputes z one slice of positions at a time (one extra head matmul per slice), so
peak memory is a few [slice, V] tensors whatever K is. When all K positions fit one slice the
softmax of the forward is kept instead, so short batches pay no recomputation.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

# Floats of one slice's logits: [positions x vocab] x 4 bytes stays near 128 MiB, so a 50k
# vocabulary goes 667 positions at a time and a 150k one 223 (peak: two or three of these).
SLICE_FLOATS = 32 << 20


def slice_positions(vocab: int) -> int:
    return max(1, SLICE_FLOATS // max(1, vocab))


class _HeadLogps(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, positions: int,
                squares: bool):
        k = hidden.shape[0]
        values = torch.empty(k, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(values)
        log_sum_sq = torch.empty_like(values) if squares else None
        kept = None
        for start in range(0, k, positions):
            end = min(k, start + positions)
            logits = F.linear(hidden[start:end], weight, bias).float()
            lse[start:end] = torch.logsumexp(logits, dim=-1)
            values[start:end] = logits.gather(-1, labels[start:end, None]).squeeze(-1) - lse[start:end]
            if squares:  # log sum_v p_v^2 = logsumexp(2 z) - 2 logsumexp(z) (WPO; no gradient)
                log_sum_sq[start:end] = torch.logsumexp(2.0 * logits, dim=-1) - 2.0 * lse[start:end]
            if k <= positions:  # one slice: keep its softmax, the backward then needs no matmul again
                kept = logits.sub_(lse[:, None]).exp_()
        ctx.positions, ctx.spent = positions, False
        ctx.save_for_backward(hidden, weight, bias, labels, lse, kept)
        if squares:
            ctx.mark_non_differentiable(log_sum_sq)
        return values, log_sum_sq

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_values: Tensor, _grad_log_sum_sq: Tensor | None):
        hidden, weight, bias, labels, lse, kept = ctx.saved_tensors
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if want_b else None
        if kept is not None:
            if ctx.spent:  # its softmax became the gradient in place below
                raise RuntimeError("head_logps: a second backward through the same graph is not supported")
            ctx.spent = True
        for start in range(0, hidden.shape[0], ctx.positions):
            end = min(hidden.shape[0], start + ctx.positions)
            if kept is not None:
                probs = kept
            else:
                probs = F.linear(hidden[start:end], weight, bias).float().sub_(lse[start:end, None]).exp_()
            g = grad_values[start:end].float()
            # dL/dz = g (onehot - softmax), built in the softmax's memory; matmuls in the weight's
            # dtype (under autocast, which custom_bwd restores, in the autocast dtype)
            grad_z = probs.mul_(-g[:, None]).scatter_add_(1, labels[start:end, None], g[:, None]).to(weight.dtype)
            if want_h:
                grad_h[start:end] = (grad_z @ weight).to(hidden.dtype)
            if want_w:  # accumulated in float32, in place when the weight is float32 (no [V, H] temporary)
                if grad_z.dtype == torch.float32:
                    grad_w.addmm_(grad_z.T, hidden[start:end].float())
                else:
                    grad_w += (grad_z.T @ hidden[start:end].to(weight.dtype)).float()
            if want_b:
                grad_b += grad_z.float().sum(0)
        return (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                None if grad_b is None else grad_b.to(bias.dtype), None, None, None)


def head_logps(hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, *, squares: bool = False,
               positions: int | None = None) -> tuple[Tensor, Tensor | None]:
    """hidden [K, H] (what enters the LM head at each position), weight [V, H], bias [V] or None,
    labels [K] -> (log p(label) [K] float32 with gradient, log sum_v p_v^2 [K] without, or None)."""
    positions = positions or slice_positions(weight.shape[0])
    return _HeadLogps.apply(hidden, weight, bias, labels, positions, squares)
