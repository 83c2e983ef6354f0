"""The study's scorer actor (sweep.evaluation.scorer.Scorer): the reference model and the judge
loaded once per study, which every trial's generation evaluation calls by name.

Started by the driver before the first trial, on its node (see `start_scorer` for one that
needs a GPU), outside any trial's placement group and with no CPU of its own (it works only
while a trial waits on it, so it must not take the CPU a trial group needs); owned by the
driver, it ends with it."""
from __future__ import annotations

import hashlib

from sweep.config.loading import ConfigError
from sweep.config.schema import PrefsweepConfig
from sweep.evaluation.judges import check_judge
from sweep.evaluation.scorer import ACTOR_NAMESPACE, Scorer
from sweep.study.coordinator import on_driver_node


def check_evaluation(cfg: PrefsweepConfig, data=None) -> None:
    """What can be checked of the evaluation section before anything is written or started:
    the judge loads, and (given the loaded data) the eval split has prompts to complete."""
    if cfg.evaluation is None:
        return
    if data is not None and not data.eval:
        raise ConfigError([("evaluation", "the eval split is empty, so there are no prompts to complete; "
                                           "set data.eval or data.eval_fraction")])
    if cfg.evaluation.judge is not None:
        check_judge(cfg.evaluation.judge)


def start_scorer(cfg: PrefsweepConfig, study_dir: str):
    """-> (the name trials find it by, the handle that keeps it alive), or (None, None)."""
    if cfg.evaluation is None:
        return None, None
    import ray

    # Two studies of one name under different storages may share a cluster: the dir names it.
    name = f"prefsweep-scorer-{cfg.name}-{hashlib.sha256(study_dir.encode()).hexdigest()[:10]}"
    gpus = cfg.evaluation.scorer_gpus
    # On the driver's node, so losing a worker node never takes it; one that needs a GPU goes
    # where there is one and is restarted (it holds nothing a reload cannot rebuild, and its
    # calls are pure, so they are retried) if that node goes.
    placement = ({"scheduling_strategy": "DEFAULT", "max_restarts": -1, "max_task_retries": -1} if gpus > 0
                 else on_driver_node())
    actor = ray.remote(Scorer).options(
        name=name, namespace=ACTOR_NAMESPACE, get_if_exists=True, num_cpus=0, num_gpus=gpus, **placement,
    ).remote(cfg.model_dump(mode="json"), study_dir, "cuda" if gpus > 0 else "cpu")
    ray.get(actor.ready.remote())  # a reference model or judge that cannot load fails the study here
    return {"name": name, "namespace": ACTOR_NAMESPACE}, actor
