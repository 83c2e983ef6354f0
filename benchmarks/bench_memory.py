"""Peak memory of the loss path: completion-token log-probs through the LM head, forward and
backward, sliced (sweep.engine.chunked_head, what the step runs) vs full logits (what it ran
before: the head over every completion position at once, then gather - logsumexp).

The loss path starts at the hidden states entering the head (with gradient) and ends with
the gradients of those states and of the head's weight. Both variants run side by side in
one process, alternating, on the same tensors; each is measured two ways:
- tensor bytes: a dispatch mode sees every tensor every operation creates and when its
  storage dies, so its peak is the most tensor memory alive at once (exact, load-proof);
- process peak RSS: Linux's VmHWM, reset before each run through /proc/self/clear_refs, minus
  the RSS at the start (the allocator's view; skipped where clear_refs is not writable).

    python benchmarks/bench_memory.py [--vocab 50257] [--hidden 768] [--pairs 8] [--tokens 512]
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch
from common import machine, median, write_json
from torch.multiprocessing.reductions import StorageWeakRef
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sweep.engine.chunked_head import head_logps, slice_positions
from sweep.engine.sequence_logps import _token_stats


class PeakTensorBytes(TorchDispatchMode):
    """The most bytes of tensor storage alive at once among those created inside the mode."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, _types, args=(), kwargs=None):
        for key, (ref, size) in list(self.live.items()):  # storages freed since the last operation
            if ref.expired():
                del self.live[key]
                self.current -= size
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                ref = StorageWeakRef(t.untyped_storage())
                if ref.cdata not in self.live:
                    self.live[ref.cdata] = (ref, t.untyped_storage().nbytes())
                    self.current += t.untyped_storage().nbytes()
        self.peak = max(self.peak, self.current)
        return out


def _status_bytes(field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(found.group(1)) * 1024 if found else 0


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        return True
    except OSError:
        return False


def full_logits(hidden, weight, labels):
    values, _ = _token_stats(F.linear(hidden, weight), labels, False)
    return values


def sliced(hidden, weight, labels):
    return head_logps(hidden, weight, None, labels)[0]


def measure(fn, hidden, weight, labels, upstream) -> dict:
    hidden.grad = weight.grad = None
    with PeakTensorBytes() as tracker:
        (fn(hidden, weight, labels) * upstream).sum().backward()
    hidden.grad = weight.grad = None
    rss = None
    if _reset_peak_rss():
        base = _status_bytes("VmRSS")
        began = time.perf_counter()
        (fn(hidden, weight, labels) * upstream).sum().backward()
        seconds = time.perf_counter() - began
        rss = _status_bytes("VmHWM") - base
    else:
        began = time.perf_counter()
        (fn(hidden, weight, labels) * upstream).sum().backward()
        seconds = time.perf_counter() - began
    hidden.grad = weight.grad = None
    return {"tensor_bytes": tracker.peak, "rss_bytes": rss, "seconds": seconds}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens per sequence (not scored)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    k = 2 * args.pairs * (args.tokens - args.prompt)  # chosen and rejected rows, their completion positions
    hidden = torch.randn(k, args.hidden, requires_grad=True)
    weight = (0.02 * torch.randn(args.vocab, args.hidden)).requires_grad_()
    labels = torch.randint(0, args.vocab, (k,))
    upstream = torch.randn(k)
    runs: dict[str, list[dict]] = {"full logits": [], "sliced": []}
    for _ in range(args.repeats):  # alternating, so both see the same machine
        runs["full logits"].append(measure(full_logits, hidden, weight, labels, upstream))
        runs["sliced"].append(measure(sliced, hidden, weight, labels, upstream))

    mib = lambda n: None if n is None else n / 2**20  # noqa: E731
    print(f"\n## loss-path peak memory: {2 * args.pairs} sequences x {args.tokens} tokens ({args.prompt} prompt), "
          f"{k:,} completion positions, vocab {args.vocab:,}, hidden {args.hidden}, float32; "
          f"[positions x vocab] = {mib(4 * k * args.vocab):,.0f} MiB, slices of {slice_positions(args.vocab)} positions")
    summary = {}
    for name, got in runs.items():
        summary[name] = {"tensor_mib": mib(max(r["tensor_bytes"] for r in got)),
                         "rss_mib": None if got[0]["rss_bytes"] is None else mib(max(r["rss_bytes"] for r in got)),
                         "seconds_median": median([r["seconds"] for r in got])}
        rss = summary[name]["rss_mib"]
        print(f"{name:12s} peak tensor memory {summary[name]['tensor_mib']:8,.0f} MiB   peak RSS growth "
              f"{'n/a' if rss is None else f'{rss:8,.0f} MiB'}   forward+backward {summary[name]['seconds_median']:.2f} s")
    ratio = summary["sliced"]["tensor_mib"] / summary["full logits"]["tensor_mib"]
    rss_ratio = (summary["sliced"]["rss_mib"] / summary["full logits"]["rss_mib"]
                 if summary["sliced"]["rss_mib"] is not None else None)
    if rss_ratio is not None:
        print(f"peak RSS growth, sliced vs full logits: {rss_ratio:.2f}")
    label = f"vocab {args.vocab}, {args.tokens} tokens, {args.pairs} pairs"
    print(f"loss-path peak memory, chunked vs full logits ({label}): {ratio:.2f}x")
    result = {"args": vars(args), "machine": machine(), "positions": k, "summary": summary, "ratio": ratio,
              "rss_ratio": rss_ratio}
    write_json("memory", result)
    return result


if __name__ == "__main__":
    main()
