"""What a study's trials say about its parameters: Optuna's importances for the sweep metric,
and plain sentences about where the best (and the worst) trials' values lie, computed from the
trials, never written by hand."""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sweep.config.search import value_label
from sweep.study.trials import first_value

# Optuna's importance evaluators by the name a report asks for; seeded where they draw, so a
# report says the same on every run. fANOVA is the default (PED-ANOVA, Optuna 5's, needs more
# trials than a sweep usually has: it compares the top 10% with the rest).
EVALUATORS = {"fanova": ("FanovaImportanceEvaluator", {"seed": 0}),
              "mean_decrease_impurity": ("MeanDecreaseImpurityImportanceEvaluator", {"seed": 0}),
              "ped_anova": ("PedAnovaImportanceEvaluator", {})}
DEFAULT_EVALUATOR = "fanova"
MIN_TRIALS = 2  # importances need trials that differ
MIN_RANKED = 3  # sentences about the best trials need some that are not the best
T = TypeVar("T")


@dataclass
class Ranked:
    """One trial with a value of the sweep metric: what the sentences read."""

    label: str
    params: dict[str, Any]
    value: float


def fmt(value: Any) -> str:
    """A number as people write it: 5e-5, 0.2, 128."""
    if isinstance(value, (list, tuple, bool)):
        return value_label(value)  # a mixture of objectives as sigmoid+sft, booleans as YAML's
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    if abs(value) < 1e-3 or abs(value) >= 1e6:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:.3g}"


def completed_copy(trials: Sequence, goal: str):
    """An in-memory Optuna study of the trials that reached a value, each COMPLETE with the sweep
    metric as its one value: Optuna's importance evaluators and plots read only COMPLETE trials
    of single-objective studies, and ASHA-stopped (PRUNED) trials count here with their last value."""
    import optuna
    from optuna.trial import TrialState, create_trial

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created in memory" per report
    try:
        copy = optuna.create_study(direction=goal, storage=optuna.storages.InMemoryStorage())
    finally:
        optuna.logging.set_verbosity(verbosity)
    copy.add_trials([create_trial(state=TrialState.COMPLETE, value=first_value(t), params=t.params,
                                  distributions=t.distributions) for t in usable_trials(trials)])
    return copy


def usable_trials(trials: Sequence) -> list:
    return [t for t in trials if finite(first_value(t)) is not None and t.params]


def param_importances(trials: Sequence, metric: str, goal: str, evaluator: str = DEFAULT_EVALUATOR) -> dict[str, Any]:
    """Optuna's importances (`evaluator`: a name of EVALUATORS) of the parameters for `metric`
    over Optuna trials (`FrozenTrial`s, any state) that reached a value: ASHA-stopped ones count
    with their last value, as TPE counts them. -> {metric, evaluator, trials, values, note};
    values sum to 1 or are empty, and `note` says in a sentence why when they are empty or say little."""
    import optuna

    usable = usable_trials(trials)
    out: dict[str, Any] = {"metric": metric, "evaluator": evaluator, "trials": len(usable), "values": {}, "note": None}
    if len(usable) < MIN_TRIALS:
        out["note"] = (f"Importances need at least {MIN_TRIALS} trials with a value of {metric}; this study has "
                       f"{len(usable)}.")
        return out
    if len({first_value(t) for t in usable}) == 1:
        out["note"] = f"Every trial with a value reached the same {metric}, so no parameter explains a difference."
        return out
    kind, options = EVALUATORS[evaluator]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-API warnings
            values = optuna.importance.get_param_importances(
                completed_copy(usable, goal), evaluator=getattr(optuna.importance, kind)(**options))
    except RuntimeError as err:  # fANOVA's trees found no variance to split
        out["note"] = f"No importances: {err}"
        return out
    except ValueError as err:  # no parameter that every trial has (conditional spaces)
        out["note"] = f"No importances: {err}"
        return out
    out["values"] = {k: float(v) for k, v in values.items()}
    if len(values) == 1:
        out["note"] = (f"Only one parameter ({next(iter(values))}) varies across these trials, so it carries all "
                       "the importance by definition.")
    elif len(usable) < 8:
        out["note"] = f"From {len(usable)} trials: a rough guide, not a measurement."
    return out


def finite(value: Any) -> float | None:
    """A finite number as a float; anything else (NaN, text, None) as None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def ranked(trials: Sequence[T], goal: str, value: Callable[[T], float] = lambda t: t.value) -> list[T]:
    """Best first, by `value` of each (a Ranked's own by default)."""
    return sorted(trials, key=lambda t: -value(t) if goal == "maximize" else value(t))


def observations(trials: Sequence[Ranked], metric: str, goal: str, categorical: set[str]) -> list[str]:
    """Sentences about where the best trials' parameter values lie (and values that are
    consistently poor), from the trials alone. `categorical`: keys swept over a list of values
    (the others with numbers are ranges)."""
    order = ranked([t for t in trials if finite(t.value) is not None], goal)
    if len(order) < MIN_RANKED:
        return [f"{len(order)} trial{'s' if len(order) != 1 else ''} reported {metric}: too few to say where good "
                "values lie."]
    keys = sorted({k for t in order for k in t.params})
    lines = []
    for key in keys:
        having = [(rank, t.params[key]) for rank, t in enumerate(order, 1) if key in t.params]
        if len(having) < MIN_RANKED or len({_hashable(v) for _, v in having}) < 2:
            continue  # a constant, or too few trials draw it to compare
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in having)
        if numeric and key not in categorical:
            lines += _range_sentences(key, having, metric)
        else:
            lines += _value_sentences(key, having, metric)
    return lines or [f"No parameter separates the best trials by {metric} from the rest."]


def top_count(n: int) -> int:
    """How many trials count as 'the best' of n: a quarter, at least two."""
    return max(2, math.ceil(n / 4))


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _value_sentences(key: str, having: list[tuple[int, Any]], metric: str) -> list[str]:
    n = len(having)
    k = top_count(n)
    top = [v for _, v in having[:k]]
    distinct_top = list(dict.fromkeys(_hashable(v) for v in top))
    lines = []
    if len(distinct_top) == 1:
        uses = sum(_hashable(v) == distinct_top[0] for _, v in having)
        run = next((i for i, (_, v) in enumerate(having) if _hashable(v) != distinct_top[0]), n)  # the best that share it
        lines.append(f"The best {run} trials by {metric} all use {key} = {fmt(top[0])} ({uses} of {n} trials use it).")
    else:
        lines.append(f"The best {k} trials by {metric} use {key} = " + " or ".join(fmt(v) for v in distinct_top) + ".")
    half = n - n // 2  # ranks above this are the bottom half
    for value in dict.fromkeys(_hashable(v) for _, v in having):
        ranks = [rank for rank, v in having if _hashable(v) == value]
        if len(ranks) >= 2 and min(ranks) > half:
            lines.append(f"{key} = {fmt(value)} is consistently poor: its {len(ranks)} trials rank "
                         f"{_list(ranks)} of {n}.")
    return lines


def _range_sentences(key: str, having: list[tuple[int, Any]], metric: str) -> list[str]:
    n = len(having)
    k = top_count(n)
    top = sorted(v for _, v in having[:k])
    worst = sorted(v for _, v in having[-k:])
    lines = [f"The best {k} trials by {metric} have {key} from {fmt(top[0])} to {fmt(top[-1])}."
             if top[0] != top[-1] else f"The best {k} trials by {metric} all have {key} = {fmt(top[0])}."]
    if n >= 2 * k:  # the best and the worst do not overlap
        if worst[0] > top[-1]:
            lines.append(f"Higher {key} is poor: the worst {k} trials have {fmt(worst[0])} to {fmt(worst[-1])}.")
        elif worst[-1] < top[0]:
            lines.append(f"Lower {key} is poor: the worst {k} trials have {fmt(worst[0])} to {fmt(worst[-1])}.")
    return lines


def _list(ranks: list[int]) -> str:
    words = [str(r) for r in ranks]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
