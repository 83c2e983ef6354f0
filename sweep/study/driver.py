"""The sweep driver: Ray Tune (Optuna search, ASHA) over Ray Train trials.

Ray Train V2 pattern (DESIGN.md): each Tune trial is a function that builds a TorchTrainer
and calls `.fit()`; `TuneReportCallback` forwards the workers' reports to Tune. The driver
owns the MLflow parent run; each trial owns its child run; rank-0 workers log step metrics.
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from objectives.registry import resolve
from sweep import tracking
from sweep.config.loading import config_with
from sweep.config.redact import mask_url
from sweep.config.schema import PrefsweepConfig
from sweep.data.loading import load_preference_data
from sweep.engine.trainer import build_trainer
from sweep.storage.files import delete_dir, join
from sweep.storage.fingerprint import data_digest
from sweep.storage.record import StudyRecord, exists, load_record, optuna_url, study_dir
from sweep.study import reference_cache as refcache
from sweep.study import shared_tokens
from sweep.study.closing import summarize_study
from sweep.study.console import SweepProgress, worker_logs_on_console
from sweep.study.coordinator import hold
from sweep.study.liveness import keep_alive
from sweep.study.optuna_search import StudySearch, link_trial
from sweep.study.ray_cluster import init_ray
from sweep.study.scoring import check_evaluation, start_scorer
from sweep.study.search_space import sampler_for, total_trials
from sweep.study.trials import ENDED_STATES, evaluations_per_trial, trial_rows

logger = logging.getLogger(__name__)


class StudyExistsError(ValueError):
    pass


class SweepInterrupted(RuntimeError):
    """Tune stopped on a signal (Ctrl-C, a cancelled Ray job) before every trial ended; it
    returns normally then, so the study must not be closed as finished."""


def run_trial(params: dict[str, Any], *, study: dict[str, Any]) -> None:
    """One Tune trial: a TorchTrainer run under a stable name, so a restarted trial resumes
    from its last checkpoint (`ray.train.get_checkpoint()` in the workers). `study["data"]` is
    [the loaded rows' object ref] and `study["data_hash"]` their digest (put once by the driver)."""
    started = time.time()
    trial_id = tune.get_context().get_trial_id()
    cfg = config_with(PrefsweepConfig.model_validate(study["config"]), params)
    uri, experiment_id, parent = study["tracking_uri"], study["experiment_id"], study["parent_run_id"]
    tags = {tracking.PARENT_TAG: parent, tracking.TRIAL_TAG: trial_id}
    run_id = tracking.find_run(uri, experiment_id, tags)  # a resumed trial keeps its child run
    if run_id is not None:
        earlier = tracking.client_for(uri).get_run(run_id).data.tags
        if earlier.get(tracking.STATE_TAG) == "failed":
            # Tune restarts a trial that raised; one whose own training failed (Ray Train
            # already retried it) would fail the same way again.
            raise TrialFailedError(earlier.get(tracking.ERROR_TAG, "an earlier attempt failed"))
    if run_id is None:
        run_id = tracking.create_run(
            uri, experiment_id, f"{cfg.name}-{trial_id}",
            tags={**tags, tracking.STUDY_TAG: cfg.name, tracking.KIND_TAG: "trial"},
            params={**cfg.model_dump(mode="json"), **{f"swept.{k}": v for k, v in params.items()}},
        )
        # The three stores point at each other: the Optuna trial names this run, the run its number.
        try:
            number = link_trial(study["optuna_url"], cfg.name, trial_id, run_id)
        except Exception as exc:  # a link is a convenience: never a reason to fail the trial
            logger.warning("could not link trial %s to its Optuna trial: %s", trial_id, mask_url(str(exc)))
            number = None
        if number is not None:
            tracking.set_tags(uri, run_id, {tracking.OPTUNA_TRIAL_TAG: number})
    # The study's shared tokenization and reference log-probs for this trial's settings (made on
    # first use when swept parameters change them); ref_cache None = the workers run a live reference.
    try:
        tokens = shared_tokens.for_trial(cfg, study, uri, parent)
        ref_cache = refcache.for_trial(cfg, tokens, study["dir"], data_hash=study["data_hash"], tracking_uri=uri,
                                       run_id=run_id, parent_run_id=parent)
        trainer = build_trainer(
            cfg, study["data"][0], tokens=tokens[0], run_name=f"trial-{trial_id}",
            storage_path=join(study["dir"], "train"), mlflow={"tracking_uri": uri, "run_id": run_id},
            callbacks=[TuneReportCallback()], ref_cache=ref_cache, scorer=study["scorer"],
        )
        fitting = time.time()
        trainer.fit()
    except Exception as exc:
        if not training_failed(exc):
            # Lost to the cluster (a node, the Train controller): Tune restarts the trial on
            # the nodes left and its Train run resumes from its last checkpoint.
            tracking.set_tags(uri, run_id, {tracking.STATE_TAG: "restarting", tracking.ERROR_TAG: tracking.short_error(exc)})
            raise
        tracking.set_tags(uri, run_id, {tracking.STATE_TAG: "failed", tracking.ERROR_TAG: tracking.short_error(exc)})
        tracking.end_run(uri, run_id, "FAILED")
        raise
    times = json.dumps({"started": round(started, 3), "fit": round(fitting, 3), "ended": round(time.time(), 3),
                        "pid": os.getpid()})
    tracking.set_tags(uri, run_id, {tracking.STATE_TAG: "finished", tracking.TRIAL_TIMES_TAG: times})
    tracking.end_run(uri, run_id, "FINISHED")


class TrialFailedError(RuntimeError):
    """An earlier attempt of this trial failed in its own training code."""


def training_failed(exc: BaseException) -> bool:
    """True when the trial's training code itself raised (a NaN loss, a bad shape) after the
    retries Ray Train gave it; False when the failure came from the cluster (a worker
    process, the Train controller or a whole node lost), which a restart elsewhere fixes."""
    failures = getattr(exc, "worker_failures", None)
    return isinstance(exc, ray.train.WorkerGroupError) and bool(failures) and not any(
        isinstance(error, ray.exceptions.RayError) for error in failures.values())


def _scheduler(cfg: PrefsweepConfig):
    early = cfg.sweep.early_terminate
    if early is None:
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",  # one iteration = one evaluation report
        # ASHA stops a trial on reaching max_t, which would cut the trial function off
        # before it closes its MLflow run; one past the last evaluation never triggers.
        max_t=max(evaluations_per_trial(cfg), early.grace_period) + 1,
        grace_period=early.grace_period,
        reduction_factor=early.reduction_factor,
    )


def reuse_trial_actors(cfg: PrefsweepConfig) -> bool:
    """The next trial function runs in the actor the last one ended in, the project already
    imported: a fresh actor per trial costs seconds of start-up (about 5 s on 2 cores). Not
    with early stopping: Tune keeps the actor of a trial ASHA stopped for reuse while its
    Train run goes on, and the reset of that actor for the next trial then fails that trial."""
    return cfg.sweep.early_terminate is None


TRIAL_MEMORY = 64 * 1024**2  # bytes reserved per trial function (logical)


def _trainable(record: StudyRecord, shared: dict[str, Any]):
    study = {**record.__dict__, **shared, "dir": study_dir(record.cfg.resolved_storage(), record.name)}
    # The trial function only waits on its TorchTrainer; the workers hold the CPUs/GPUs.
    # Tune refuses an all-zero request, hence a sliver, of memory: a CPU sliver would leave
    # the node it lands on short of a whole CPU, so on a cluster whose nodes have exactly
    # the CPUs of a worker group no worker group would ever fit (a deadlock).
    return tune.with_resources(tune.with_parameters(run_trial, study=study), {"memory": TRIAL_MEMORY})


def _load_data(cfg: PrefsweepConfig):
    paired = any(resolve(n).paired for n in cfg.objectives_in_play())
    return load_preference_data(cfg.data, paired=paired, seed=cfg.train.seed)


def start_study(cfg: PrefsweepConfig, *, overwrite: bool = False, progress: list | None = None) -> StudyRecord:
    """Validate everything, then run the sweep to the end. Raises before any trial starts
    on a bad config or bad data."""
    storage = cfg.resolved_storage()
    if exists(storage, cfg.name) and not overwrite:
        raise StudyExistsError(
            f"study {cfg.name!r} already exists under {storage}: `prefsweep resume {cfg.name}` continues it, "
            "--set name=NEW starts another, --overwrite replaces it"
        )
    data = _load_data(cfg)
    sampler_for(cfg.sweep)  # a search space Optuna refuses fails here, before anything is written
    check_evaluation(cfg, data)  # and a judge that cannot be imported or loaded
    url = optuna_url(cfg)
    if overwrite:
        _forget(cfg, url)
    uri = tracking.tracking_uri(cfg)
    experiment_id = tracking.ensure_experiment(cfg, uri)
    init_ray(log_to_driver=worker_logs_on_console())
    parent = tracking.create_run(
        uri, experiment_id, cfg.name, tags={tracking.STUDY_TAG: cfg.name, tracking.KIND_TAG: "study"},
        params=cfg.model_dump(mode="json"),
    )
    record = StudyRecord(name=cfg.name, config=cfg.model_dump(mode="json"), tracking_uri=uri,
                         experiment_id=experiment_id, parent_run_id=parent, optuna_url=url)
    keep_alive(record, storage)  # saves it, stamped with who drives it, and again every few seconds while it runs
    with _fails_study(record):
        shared = _share_inputs(record, data)
        scorer, _scorer_alive = start_scorer(cfg, study_dir(storage, cfg.name))  # held while the sweep runs
        tuner = tune.Tuner(
            _trainable(record, {**shared, "scorer": scorer}),
            tune_config=tune.TuneConfig(
                metric=cfg.sweep.metric.name, mode=cfg.sweep.metric.mode,
                search_alg=StudySearch(cfg, optuna.storages.RDBStorage(url)), scheduler=_scheduler(cfg),
                num_samples=total_trials(cfg.sweep), max_concurrent_trials=cfg.sweep.max_concurrent_trials,
                reuse_actors=reuse_trial_actors(cfg),
            ),
            run_config=tune.RunConfig(
                name=cfg.name, storage_path=storage, callbacks=[SweepProgress(cfg), *(progress or [])],
                verbose=0,  # SweepProgress prints the trials' events instead of Ray's tables
                # A trial whose function died with its node restarts on the nodes left (see
                # run_trial); the Train run inside it retries lost workers on its own.
                failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_retries, fail_fast=False),
            ),
        )
    return _finish(record, tuner)


@contextmanager
def _fails_study(record: StudyRecord):
    """Between writing the study record and Tune's first trial: an error leaves the study
    `failed` with its message (so `status` says why), never `running` forever."""
    try:
        yield
    except BaseException as exc:
        # Ctrl-C here leaves it `interrupted`, like one during the sweep (resume continues it).
        record.state = "failed" if isinstance(exc, Exception) else "interrupted"
        record.error = tracking.short_error(exc)
        record.save(record.cfg.resolved_storage())
        raise


def resume_study(name: str, storage: str = "runs", progress: list | None = None) -> StudyRecord:
    record = load_record(name, storage)
    cfg = record.cfg
    if record.state == "finished":
        return record
    data = _load_data(cfg)
    init_ray(log_to_driver=worker_logs_on_console())
    keep_alive(record, cfg.resolved_storage())  # running again, driven by this process
    with _fails_study(record):
        shared = _share_inputs(record, data)
        scorer, _scorer_alive = start_scorer(cfg, study_dir(cfg.resolved_storage(), name))  # held while the sweep runs
        tuner = tune.Tuner.restore(
            study_dir(cfg.resolved_storage(), name), trainable=_trainable(record, {**shared, "scorer": scorer}),
            resume_unfinished=True, resume_errored=False, restart_errored=False,
        )
    return _finish(record, tuner)


def _share_inputs(record: StudyRecord, data: Any) -> dict[str, Any]:
    """What every trial shares, made once before Tune starts: the loaded rows in the object
    store (one put per study, not per trial), the study's coordinator, its tokenization and its
    reference-cache entry (where no swept parameter changes them) -> what trials are handed."""
    cfg = record.cfg
    data_hash = data_digest(data)
    hold(cfg.name)
    tokens = shared_tokens.prepare_study(cfg, data, data_hash, record.tracking_uri, record.parent_run_id)
    refcache.prepare_study(cfg, tokens, study_dir(cfg.resolved_storage(), record.name), record.tracking_uri,
                           record.parent_run_id, data_hash)
    return {"data": [ray.put(data)], "data_hash": data_hash}  # in a list: trials get the ref, not the rows


def _finish(record: StudyRecord, tuner: tune.Tuner) -> StudyRecord:
    cfg = record.cfg
    try:
        tuner.fit()
    except BaseException as exc:
        record.state, record.error = "interrupted", tracking.short_error(exc)
        record.save(cfg.resolved_storage())
        raise
    ended = sum(row.state in ENDED_STATES for row in trial_rows(record))
    total = total_trials(cfg.sweep)
    if ended < total:
        record.state = "interrupted"
        record.error = f"interrupted with {ended}/{total} trials ended; `prefsweep resume {record.name}` continues it"
        record.save(cfg.resolved_storage())
        raise SweepInterrupted(record.error)
    return summarize_study(record)


def _forget(cfg: PrefsweepConfig, url: str) -> None:
    """--overwrite: drop the old Optuna study (study names are unique per storage)."""
    try:
        optuna.delete_study(study_name=cfg.name, storage=url)
    except KeyError:
        pass
    delete_dir(study_dir(cfg.resolved_storage(), cfg.name))  # a directory or s3:// gs://

