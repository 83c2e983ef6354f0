"""The study report on a study made by hand (tests/report_study.py: real Optuna and MLflow
SQLite stores): every trial's row, importances, the sentences derived from the data, the CSV,
the files and plots, and what lands on the MLflow parent run."""
from __future__ import annotations

import csv
import io
import json
import random

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from report_study import GEN, METRIC, build

from sweep import tracking
from sweep.config.search import MetricConfig
from sweep.study.closing import log_frontier
from sweep.study.report import build_report, report_csv
from sweep.study.report_files import write_report
from sweep.study.report_insights import Ranked, fmt, observations, param_importances
from sweep.study.report_plots import FRONTIER_FILE, frontier_data
from sweep.study.selection import pareto_front


def ranked_study(shared: float, seed: int) -> list[Ranked]:
    """Twelve trials in a random order whose best four all use beta = `shared`; beta 0.01
    trials are the worst; the best learning rates lie in 4e-5..8e-5, the worst above 2e-3."""
    rng = random.Random(seed)
    others = [b for b in (0.05, 0.1, 0.3, 0.5) if b != shared]
    trials = [Ranked(f"best{i}", {"objective.beta": shared, "train.learning_rate": rng.uniform(4e-5, 8e-5)},
                     0.95 - 0.01 * i) for i in range(4)]
    trials += [Ranked(f"mid{i}", {"objective.beta": rng.choice(others), "train.learning_rate": rng.uniform(1e-4, 2e-3)},
                      0.7 - 0.02 * i) for i in range(5)]
    trials += [Ranked(f"bad{i}", {"objective.beta": 0.01, "train.learning_rate": rng.uniform(3e-3, 1e-2)}, 0.3 - 0.05 * i)
               for i in range(3)]
    rng.shuffle(trials)
    return trials


@pytest.mark.parametrize("shared", [0.1, 0.3])
def test_the_sentences_find_the_value_the_best_trials_share(shared):
    trials = ranked_study(shared, seed=int(shared * 10))
    lines = observations(trials, METRIC, "maximize", categorical={"objective.beta"})
    best_lr = sorted(t.params["train.learning_rate"] for t in trials if t.label.startswith("best"))[1:]
    assert f"The best 4 trials by {METRIC} all use objective.beta = {fmt(shared)} (4 of 12 trials use it)." in lines
    assert "objective.beta = 0.01 is consistently poor: its 3 trials rank 10, 11 and 12 of 12." in lines
    # top_count(12) = 3: the best three's learning rates, and the worst three's above them
    top3 = sorted(t.params["train.learning_rate"] for t in sorted(trials, key=lambda t: -t.value)[:3])
    assert f"The best 3 trials by {METRIC} have train.learning_rate from {fmt(top3[0])} to {fmt(top3[-1])}." in lines
    assert any(s.startswith("Higher train.learning_rate is poor: the worst 3 trials have") for s in lines), lines
    assert best_lr  # the fixture did draw them
    # Minimising flips what "best" means: the 0.01 trials are now the best.
    flipped = observations(trials, METRIC, "minimize", categorical={"objective.beta"})
    assert f"The best 3 trials by {METRIC} all use objective.beta = 0.01 (3 of 12 trials use it)." in flipped


def test_too_few_trials_or_nothing_that_separates_them_is_said_plainly():
    two = [Ranked("a", {"objective.beta": 0.1}, 0.9), Ranked("b", {"objective.beta": 0.2}, 0.8)]
    assert observations(two, METRIC, "maximize", set()) == [f"2 trials reported {METRIC}: too few to say where good "
                                                            "values lie."]
    same = [Ranked(str(i), {"objective.beta": 0.1}, v) for i, v in enumerate([0.9, 0.8, 0.7])]
    assert observations(same, METRIC, "maximize", set()) == [f"No parameter separates the best trials by {METRIC} "
                                                             "from the rest."]


def frozen(number: int, value: float | None, **params):
    dists = {"objective.beta": CategoricalDistribution([0.01, 0.1, 0.2, 0.5]),
             "train.learning_rate": FloatDistribution(1e-6, 1e-3, log=True)}
    trial = create_trial(state=TrialState.COMPLETE if value is not None else TrialState.FAIL, value=value,
                         params=params, distributions={k: dists[k] for k in params})
    trial.number = number
    return trial


def test_importances_sum_to_one_and_say_why_when_they_cannot():
    rng = random.Random(0)
    trials = []
    for i in range(16):  # the value follows beta; the learning rate is noise
        beta = rng.choice([0.01, 0.1, 0.2, 0.5])
        trials.append(frozen(i, beta + rng.uniform(0, 0.01), **{"objective.beta": beta,
                                                                "train.learning_rate": 10 ** rng.uniform(-6, -3)}))
    imp = param_importances(trials, METRIC, "maximize")
    assert abs(sum(imp["values"].values()) - 1) < 1e-9 and imp["note"] is None and imp["trials"] == 16
    assert list(imp["values"]) == ["objective.beta", "train.learning_rate"]  # largest first
    assert imp["evaluator"] == "fanova" and param_importances(trials, METRIC, "maximize") == imp  # seeded
    other = param_importances(trials, METRIC, "maximize", "mean_decrease_impurity")
    assert other["evaluator"] == "mean_decrease_impurity" and list(other["values"])[0] == "objective.beta"

    one = param_importances([frozen(0, 0.5, **{"objective.beta": 0.1}), frozen(1, None, **{"objective.beta": 0.2})],
                            METRIC, "maximize")
    assert one["values"] == {} and one["note"] == f"Importances need at least 2 trials with a value of {METRIC}; " \
                                                  "this study has 1."
    single = param_importances([frozen(i, v, **{"objective.beta": b}) for i, (b, v) in enumerate(
        [(0.1, 0.5), (0.2, 0.9), (0.5, 0.6)])], METRIC, "maximize")
    assert single["values"] == {"objective.beta": 1.0} and "Only one parameter (objective.beta)" in single["note"]
    flat = param_importances([frozen(i, 0.5, **{"objective.beta": b}) for i, b in enumerate([0.1, 0.2, 0.5])],
                             METRIC, "maximize")
    assert flat["values"] == {} and "reached the same" in flat["note"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Eight trials, four of which evaluated generations (each build costs seconds: MLflow's tables)."""
    return build(tmp_path_factory.mktemp("report") / "runs", gen=GEN)


def test_every_trial_has_its_row_with_final_and_best_values_and_its_links(study):
    record, rows = study
    data = build_report(record, rows).data
    assert len(data["trials"]) == 8 and data["champion"] == "t00"
    t0, t7 = data["trials"][0], data["trials"][7]
    assert (t0["rank"], t0["state"], t0["stopped_by"], t0["steps"]) == (1, "finished", None, 100)
    assert (t7["rank"], t7["state"], t7["stopped_by"], t7["steps"]) == (8, "stopped", "asha", 50)
    assert t0["final"][METRIC] == 0.95 and t0["best"][METRIC] == pytest.approx(0.97)  # its step-50 evaluation
    assert t0["best"]["loss"] == pytest.approx(t0["final"]["loss"])  # loss fell to the end
    assert "eval/gen/length" not in t0["best"]  # no direction, no best
    runs = {r.data.tags[tracking.TRIAL_TAG]: r.info.run_id for r in tracking.client_for(record.tracking_uri).search_runs(
        [record.experiment_id], f"tags.`{tracking.PARENT_TAG}` = '{record.parent_run_id}'")}
    assert {t["trial_id"]: t["mlflow_run_id"] for t in data["trials"]} == runs
    assert [t["number"] for t in data["trials"]] == list(range(8))
    assert t0["checkpoint_path"].endswith("t00/checkpoint") and t0["wall_time_s"] is not None

    table = list(csv.DictReader(io.StringIO(report_csv(data))))
    assert len(table) == 8 and list(table[0]) == data["columns"]
    assert {"param.objective.beta", "param.train.learning_rate", f"final.{METRIC}", f"best.{METRIC}", "final.loss",
            "mlflow_run_id", "number", "checkpoint_path", "stopped_by"} <= set(table[0])
    assert table[6]["stopped_by"] == "asha" and float(table[0][f"best.{METRIC}"]) == pytest.approx(0.97)
    assert abs(sum(data["importances"]["values"].values()) - 1) < 1e-9
    assert f"The best 3 trials by {METRIC} all use objective.beta = 0.2 (3 of 8 trials use it)." in data["observations"]
    assert [p["trial_id"] for p in data["frontier"]["points"]] == ["t00", "t01", "t02", "t03"]  # those with gen metrics
    json.dumps(data, allow_nan=False)


def test_the_report_files_and_the_parent_runs_artifacts(study, tmp_path):
    record, rows = study
    steps = []
    written = write_report(build_report(record, rows, steps.append), record, tmp_path / "out", steps.append)
    out = tmp_path / "out"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(["eval_rewards_accuracies_per_step.png", "loss_per_step.png", "parallel_coordinates.png",
                           "importances.png", FRONTIER_FILE])
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    md = (out / "report.md").read_text()
    assert all(f"]({p})" in md for p in pngs) and "](trials.csv)" in md and "objective.beta = 0.2" in md
    assert json.loads((out / "report.json").read_text())["champion"] == "t00"
    assert any("importances" in s for s in steps) and any("MLflow parent run" in s for s in steps)  # progress
    client = tracking.client_for(record.tracking_uri)
    logged = {a.path for a in client.list_artifacts(record.parent_run_id, "report")}
    assert logged == {f"report/{p}" for p in [*pngs, "report.md", "trials.csv", "report.json"]}
    assert written["artifact_uri"].endswith("/report")


def test_the_reward_vs_kl_frontier_uses_the_selections_front_and_reaches_the_parent_run(study, tmp_path):
    record, rows = study
    data = frontier_data(rows, record.cfg.sweep)
    assert data["x"] == "eval/gen/kl" and data["ys"] == ["eval/gen/reward", "eval/gen/win_rate"]
    for y in data["ys"]:
        plane = [MetricConfig(name=y, goal="maximize"), MetricConfig(name="eval/gen/kl", goal="minimize")]
        assert data["fronts"][y] == [r.trial_id for r in pareto_front(rows, plane)]
    assert data["fronts"]["eval/gen/reward"] == ["t00", "t01", "t02"]  # t03 is beaten by t01 on both
    assert len(data["points"]) == 4 and data["reference"] == {"eval/gen/reward": 0.3, "eval/gen/win_rate": 0.5}
    log_frontier(record, rows)  # what the study's closing does
    client = tracking.client_for(record.tracking_uri)
    assert FRONTIER_FILE in {a.path for a in client.list_artifacts(record.parent_run_id)}
    plain, plain_rows = build(tmp_path / "plain", name="plain")
    log_frontier(plain, plain_rows)
    assert FRONTIER_FILE not in {a.path for a in tracking.client_for(plain.tracking_uri).list_artifacts(
        plain.parent_run_id)}


def test_a_multi_objective_study_reports_its_front_and_ranks_by_its_first_metric(tmp_path):
    metrics = [{"name": METRIC, "goal": "maximize"}, {"name": "eval/gen/kl", "goal": "minimize"}]
    record, rows = build(tmp_path / "runs", gen=GEN, trials=[(b, lr, v) for b, lr, v in
                                                              [(0.2, 6e-5, 0.95), (0.2, 5e-5, 0.93), (0.2, 7e-5, 0.91),
                                                               (0.1, 3e-5, 0.80)]], stopped=4, metrics=metrics)
    data = build_report(record, rows).data
    assert data["pareto_front"] == ["t00", "t01", "t02"] and [t["rank"] for t in data["trials"]] == [1, 2, 3, 4]
    assert data["importances"]["values"] and data["objectives"][1]["name"] == "eval/gen/kl"


def test_the_report_verb_prints_its_steps_and_writes_the_files(study, tmp_path, capsys):
    from sweep.cli.main import main

    record, _ = study
    storage = record.config["storage"]["path"]
    out = tmp_path / "cli-report"
    assert main(["report", "syn", "--storage", storage, "--out", str(out), "--importance", "mean_decrease_impurity"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    for step in ("reading the trials of syn", "reading the step metrics", "parameter importances", "plotting",
                 "logging"):
        assert step in printed, step
    assert "mean_decrease_impurity" in printed and "objective.beta = 0.2" in printed and f"in {out}/" in printed
    # Tune's state is not on disk here: the rows come from Optuna and MLflow.
    assert len((out / "trials.csv").read_text().splitlines()) == 9 and len(list(out.glob("*.png"))) >= 4
    assert main(["report", "nope", "--storage", storage, "--out", str(out)]) == 1
    assert "no study 'nope'" in capsys.readouterr().out
