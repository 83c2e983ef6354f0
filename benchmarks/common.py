"""Shared pieces of the benchmarks: synthetic preference data, the model under test, machine
facts, tables and JSON output. Not a test: numbers depend on the machine and its load."""
from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sweep.data.loading import PreferenceData, PreferencePair  # noqa: E402
from sweep.models.builtin import tokenizer_corpus  # noqa: E402

GPT2_DIR = Path(os.environ.get("PREFSWEEP_CACHE", Path.home() / ".cache" / "prefsweep")) / "bench-gpt2-random"


def synthetic_data(n_train: int, n_eval: int, seed: int = 0, *, max_words: int = 60) -> PreferenceData:
    """Pairs of widely varying length (as real preference data has), from the builtin
    tokenizer's own sentences so most words are single tokens. Short enough that no row is
    truncated at max_length 256: TRL and we then see exactly the same tokens."""
    rng = random.Random(seed)
    sentences = tokenizer_corpus()

    def text(words: int) -> str:
        out: list[str] = []
        while len(out) < words:
            out += rng.choice(sentences).split()
        return " ".join(out[:words])

    pairs = [PreferencePair(text(rng.randint(4, 40)), " " + text(rng.randint(2, max_words)),
                            " " + text(rng.randint(2, max_words))) for _ in range(n_train + n_eval)]
    return PreferenceData(train=pairs[:n_train], eval=pairs[n_train:], format="paired", paired=True, dropped=0)


def model_name(kind: str) -> str:
    """`tiny`: builtin:tiny-gpt2 (0.7M parameters, the targets' model). `gpt2`: a GPT-2-sized
    model (124M, transformers.GPT2Config() defaults) with random weights and the builtin
    tokenizer, saved once under the prefsweep cache, for size-realistic numbers."""
    if kind == "tiny":
        return "builtin:tiny-gpt2"
    if not (GPT2_DIR / "config.json").is_file():
        from transformers import GPT2Config, GPT2LMHeadModel

        from sweep.models.loading import load_tokenizer

        tokenizer = load_tokenizer("builtin:tiny-gpt2")
        torch.manual_seed(0)
        config = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
        GPT2LMHeadModel(config).save_pretrained(GPT2_DIR)
        tokenizer.save_pretrained(GPT2_DIR)
    return str(GPT2_DIR)


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def write_json(name: str, payload: dict) -> Path | None:
    out = os.environ.get("BENCH_OUT")
    if not out:
        return None
    path = Path(out) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return q[0], q[2]


def spread_line(name: str, ratios: list[float], max_spread: float) -> dict:
    """The line for one ratio taken per pair of steps (or runs) on the same input: its median
    with min and max, or, when the middle half of the pairs spans more than `max_spread` (a
    factor), a line that says so and gives no headline. `text` ends in `x` only with a headline."""
    low, high = quartiles(ratios)
    summary = {"median": median(ratios), "min": min(ratios), "max": max(ratios), "q1": low, "q3": high,
               "pairs": len(ratios), "headline": high / low <= max_spread}
    detail = f"min {summary['min']:.2f}x, max {summary['max']:.2f}x, quartiles {low:.2f}x-{high:.2f}x over {len(ratios)} pairs"
    if summary["headline"]:
        text = f"{name}: {summary['median']:.2f}x  [{detail}]"
    else:
        text = (f"{name}: no headline, spread too wide (quartiles {high / low:.1f}x apart, limit {max_spread}x; "
                f"the machine's load moved during the run): median {summary['median']:.2f}, {detail}")
    return {"summary": summary, "text": text}
