"""The config model: defaults, unknown keys, cross-field checks, --set overrides, and the
sweep checks that run before any trial starts."""
from __future__ import annotations

import pytest
import yaml

from sweep.config.loading import ConfigError, config_with, load_config, parse_override
from sweep.config.schema import PrefsweepConfig


def fields(err: ConfigError) -> list[str]:
    return [field for field, _ in err.problems]


def test_defaults_match_the_design_card():
    cfg = PrefsweepConfig()
    assert cfg.model.name_or_path == "builtin:tiny-gpt2-sft"
    assert cfg.data.train.path == "builtin:demo/train" and cfg.data.eval.path == "builtin:demo/eval"
    assert (cfg.objective.name, cfg.objective.beta, cfg.objective.alpha) == ("dpo", 0.1, 0.5)
    assert (cfg.train.learning_rate, cfg.train.max_steps, cfg.train.eval_every) == (5e-5, 200, 50)
    assert cfg.sweep.metric.name == "eval/rewards/accuracies" and cfg.sweep.early_terminate.type == "asha"
    assert set(cfg.sweep.parameters) == {"objective.beta", "train.learning_rate",
                                         "train.per_device_batch_size", "train.gradient_accumulation_steps"}
    assert cfg.storage.path == "runs" and cfg.tracking.experiment == "prefsweep"
    assert cfg.evaluation is None and cfg.sweep.metrics is None and cfg.sweep.champion is None


def test_every_field_is_documented():
    def walk(model, prefix=""):
        for name, info in model.model_fields.items():
            annotation = info.annotation
            yield f"{prefix}{name}", info
            for arg in getattr(annotation, "__args__", (annotation,)):
                if isinstance(arg, type) and hasattr(arg, "model_fields") and arg is not PrefsweepConfig:
                    yield from walk(arg, f"{prefix}{name}.")

    undocumented = [name for name, info in walk(PrefsweepConfig) if not info.description
                    and not hasattr(info.annotation, "model_fields") and name.count(".") >= 1]
    assert undocumented == []


def test_demo_config_loads():
    cfg = load_config("configs/demo.yaml")
    assert cfg.name == "demo"
    assert {"train.learning_rate", "objective.beta"} <= set(cfg.sweep.parameters)
    assert cfg.sweep.early_terminate is not None


def test_unknown_keys_are_refused_with_their_path():
    with pytest.raises(ConfigError) as err:
        load_config({"train": {"learnin_rate": 1e-4}})
    assert fields(err.value) == ["train.learnin_rate"]
    with pytest.raises(ConfigError) as err:
        load_config({"bogus": 1})
    assert "bogus" in fields(err.value)


def test_type_errors_name_the_field():
    with pytest.raises(ConfigError) as err:
        load_config({"train": {"max_steps": "many"}})
    assert fields(err.value) == ["train.max_steps"]


def test_prompt_length_must_be_below_max_length():
    with pytest.raises(ConfigError) as err:
        load_config({"data": {"max_length": 64, "max_prompt_length": 64}})
    assert "max_prompt_length" in str(err.value) and fields(err.value) == ["data"]


def test_paired_objective_refuses_unpaired_format_but_kto_and_pmpo_accept_it():
    with pytest.raises(ConfigError, match="needs paired data"):
        load_config({"data": {"format": "unpaired"}})
    for name in ("kto", "pmpo"):
        cfg = load_config({"data": {"format": "unpaired"}, "objective": {"name": name},
                           "sweep": {"metric": {"name": "eval/loss", "goal": "minimize"},
                                     "parameters": {"objective.beta": {"values": [0.1]}}}})
        assert cfg.objective.name == name


def test_unknown_objective_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        load_config({"objective": {"name": "dpoo"}})
    assert fields(err.value) == ["objective.name"] and "pmpo" in str(err.value)


def test_eval_and_eval_fraction_are_exclusive():
    with pytest.raises(ConfigError, match="eval_fraction"):
        load_config({"data": {"eval_fraction": 0.1}})
    cfg = load_config({"data": {"eval": None, "eval_fraction": 0.1}})
    assert cfg.data.eval is None


def test_data_source_needs_exactly_one_of_path_and_hf():
    with pytest.raises(ConfigError) as err:
        load_config({"data": {"train": {"path": "a.jsonl", "hf": "x/y"}}})
    assert fields(err.value) == ["data.train"]


def test_overrides_are_type_checked():
    cfg = load_config("configs/demo.yaml", ["train.learning_rate=1e-4", "objective.name=ipo",
                                            "data.eval=null", "data.eval_fraction=0.2"])
    assert cfg.train.learning_rate == 1e-4 and cfg.objective.name == "ipo" and cfg.data.eval_fraction == 0.2
    with pytest.raises(ConfigError) as err:
        load_config("configs/demo.yaml", ["train.per_device_batch_size=zero"])
    assert fields(err.value) == ["train.per_device_batch_size"]
    with pytest.raises(ConfigError):
        parse_override("train.learning_rate")


def test_override_of_a_sweep_parameter_keeps_its_dotted_name():
    cfg = load_config("configs/demo.yaml", ["sweep.parameters.objective.beta.values=[0.2, 0.4]"])
    assert cfg.sweep.parameters["objective.beta"].values == [0.2, 0.4]
    cfg = load_config({}, ["sweep.parameters.train.warmup_steps={values: [0, 10]}"])
    assert cfg.sweep.parameters["train.warmup_steps"].values == [0, 10]


def test_swept_keys_must_exist_and_every_edge_value_must_validate():
    bad_key = {"sweep": {"parameters": {"train.learnig_rate": {"values": [1e-4]}}}}
    with pytest.raises(ConfigError) as err:
        load_config(bad_key)
    assert fields(err.value) == ["sweep.parameters.train.learnig_rate"]
    bad_value = {"sweep": {"parameters": {"train.per_device_batch_size": {"values": [4, 0]}}}}
    with pytest.raises(ConfigError) as err:
        load_config(bad_value)
    assert fields(err.value) == ["sweep.parameters.train.per_device_batch_size"] and "0" in str(err.value)
    bad_range = {"sweep": {"parameters": {"objective.alpha": {"distribution": "uniform", "min": 0.5, "max": 1.5}}}}
    with pytest.raises(ConfigError, match="objective.alpha"):
        load_config(bad_range)


def test_log_distribution_needs_positive_bounds_and_min_below_max():
    with pytest.raises(ConfigError, match="min > 0"):
        load_config({"sweep": {"parameters": {"train.learning_rate": {
            "distribution": "log_uniform_values", "min": 0, "max": 1e-3}}}})
    with pytest.raises(ConfigError, match="must be < max"):
        load_config({"sweep": {"parameters": {"train.learning_rate": {
            "distribution": "uniform", "min": 1e-3, "max": 1e-4}}}})


def test_sweep_metric_must_be_reported_by_every_objective_in_play():
    with pytest.raises(ConfigError) as err:
        load_config({"objective": {"name": "pmpo"}})
    assert "sweep.metric.name" in fields(err.value)
    swept = {"sweep": {"parameters": {"objective.name": {"values": ["dpo", "kto"]}}}}
    with pytest.raises(ConfigError, match="kto does not report"):
        load_config(swept)
    ok = {"sweep": {"metric": {"name": "eval/loss", "goal": "minimize"},
                    "parameters": {"objective.name": {"values": ["dpo", "pmpo", "simpo"]},
                                   "objective.alpha": {"values": [0.3, 0.7]}}}}
    assert load_config(ok).objectives_in_play() == ["dpo", "pmpo", "simpo"]


def test_lora_and_other_optional_sections_can_be_swept():
    cfg = load_config({"model": {"lora": {"r": 4}},
                       "sweep": {"parameters": {"model.lora.r": {"values": [4, 8]}}}})
    assert cfg.model.lora.r == 4


def test_config_with_applies_dotted_values_and_validates():
    cfg = config_with(PrefsweepConfig(), {"objective.beta": 0.3, "train.max_steps": 10})
    assert cfg.objective.beta == 0.3 and cfg.train.max_steps == 10


def test_study_name_is_a_safe_path_component():
    for bad in ("../x", "a/b", "", "x" * 65):
        with pytest.raises(ConfigError) as err:
            load_config({"name": bad})
        assert fields(err.value) == ["name"]


def test_yaml_file_errors_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)
    path.write_text(yaml.safe_dump({"train": {"max_steps": -1}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.source == str(path) and fields(err.value) == ["train.max_steps"]


def test_files_and_request_bodies_share_one_yaml_policy(tmp_path):
    """A config file on the command line is read as the service reads a YAML body: no aliases,
    bounded depth, the line of a syntax error; an empty file is the defaults."""
    from sweep.service.submitted import parse_config_body

    path = tmp_path / "c.yaml"
    for text, field, message in (("a: &x [1]\nb: *x\n", None, "aliases"), ("x: " + "[" * 40 + "]" * 40, None, "deeper"),
                                 ("train: {max_steps: 3\n", None, "line 2"), ("- 1\n", "(root)", "mapping")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message) as from_file:
            load_config(path)
        with pytest.raises(ConfigError, match=message) as from_body:
            parse_config_body(text.encode(), "application/yaml")
        assert fields(from_file.value) == [field or "(yaml)"] and fields(from_body.value) == [field or "(body)"]
    path.write_text("# nothing but a comment\n")
    assert load_config(path) == PrefsweepConfig()


def test_relative_input_paths_resolve_beside_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "pairs.jsonl").write_text("")
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": {"path": "data/pairs.jsonl"}, "eval": {"path": "missing.jsonl"}}}))
    monkeypatch.chdir(tmp_path)  # elsewhere: the train path exists only beside the file
    cfg = load_config(path)
    assert cfg.data.train.path == str((folder / "data" / "pairs.jsonl").resolve())
    assert cfg.data.eval.path == "missing.jsonl"  # not beside the file: still the working directory's
    assert cfg.model.name_or_path == "builtin:tiny-gpt2-sft"
    assert cfg._resolved_paths == [f"data.train.path: data/pairs.jsonl -> {cfg.data.train.path} (beside the config file)"]
    monkeypatch.chdir(folder)  # from the file's own folder nothing changes meaning
    assert load_config(path)._resolved_paths == []
# ------------------------------------------------------------------ refused before anything is written

def _leaf_fields(model, prefix=""):
    """(dotted key, annotation) of every scalar field, through nested sections."""
    from pydantic import BaseModel

    for name, info in model.model_fields.items():
        args = getattr(info.annotation, "__args__", (info.annotation,))
        nested = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            yield from _leaf_fields(nested[0], f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", args


def _config_with(dotted: str, value) -> dict:
    data: dict = {}
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


def test_every_float_field_refuses_nan_and_infinities():
    floats = [key for key, args in _leaf_fields(PrefsweepConfig) if float in args]
    assert {"objective.beta", "objective.gamma", "train.learning_rate", "train.weight_decay", "train.max_grad_norm",
            "resources.cpus_per_worker", "sweep.early_terminate.reduction_factor", "objective.desirable_weight",
            "objective.undesirable_weight", "model.lora.dropout", "data.eval_fraction"} <= set(floats)
    for key in floats:
        for bad in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(ConfigError) as err:
                load_config(_config_with(key, bad))
            assert fields(err.value) == [key], (key, bad)
    for spec_key in ("min", "max", "q"):  # sweep bounds too, named by their parameter
        spec = {"distribution": "q_uniform", "min": 0.1, "max": 0.5, "q": 0.1, spec_key: float("inf")}
        with pytest.raises(ConfigError) as err:
            load_config({"sweep": {"parameters": {"objective.beta": spec}}})
        assert fields(err.value) == [f"sweep.parameters.objective.beta.{spec_key}"]
    with pytest.raises(ConfigError) as err:  # a swept value is checked as the field itself
        load_config({"sweep": {"parameters": {"objective.gamma": {"values": [0.5, float("nan")]}}}})
    assert fields(err.value) == ["sweep.parameters.objective.gamma"]
    with pytest.raises(ConfigError) as err:  # YAML's spellings, through --set
        load_config({}, ["objective.beta=.inf"])
    assert fields(err.value) == ["objective.beta"]


def test_every_int_field_is_bounded():
    ints = [key for key, args in _leaf_fields(PrefsweepConfig) if int in args and bool not in args]
    assert {"train.seed", "sweep.seed", "train.max_steps", "sweep.num_trials", "data.max_length"} <= set(ints)
    for key in ints:
        with pytest.raises(ConfigError) as err:
            load_config(_config_with(key, 2**64))
        assert fields(err.value) == [key], key
    for key in ("train.seed", "sweep.seed"):
        for bad in (-1, 2**32):
            with pytest.raises(ConfigError) as err:
                load_config(_config_with(key, bad))
            assert fields(err.value) == [key]
        assert load_config(_config_with(key, 2**32 - 1))


def test_study_names_are_matched_whole_and_never_a_storage_file():
    for bad in ("nl\n", "a\nb", " x", "x "):
        with pytest.raises(ConfigError) as err:
            load_config({"name": bad})
        assert fields(err.value) == ["name"], repr(bad)
    for bad in ("optuna.db", "mlflow.db", "MLflow.db", "mlartifacts", "refcache", "optuna.db-journal",
                "mlflow.db-wal", "mlflow.db.lock"):
        with pytest.raises(ConfigError, match="storage keeps") as err:
            load_config({"name": bad})
        assert fields(err.value) == ["name"]
    assert load_config({"name": "mlflow.db2"}).name == "mlflow.db2"


def test_set_values_refuse_yaml_aliases_and_deep_nesting():
    chain = "[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]]"
    with pytest.raises(ConfigError, match="aliases") as err:
        parse_override(f"data.columns={chain}")
    assert fields(err.value) == ["data.columns"]
    with pytest.raises(ConfigError, match="deeper than 32"):
        parse_override("data.columns=" + "[" * 40 + "]" * 40)
    assert parse_override("data.columns={prompt: q}") == ("data.columns", {"prompt": "q"})


def test_public_form_masks_database_passwords():
    cfg = load_config({"storage": {"optuna_url": "postgresql+psycopg://u:s3cret@db:5432/optuna"},
                       "tracking": {"mlflow_tracking_uri": "http://me:pw@mlflow:5000"}})
    public = cfg.public()
    assert public["storage"]["optuna_url"] == "postgresql+psycopg://u:***@db:5432/optuna"
    assert public["tracking"]["mlflow_tracking_uri"] == "http://me:***@mlflow:5000"
    assert cfg.storage.optuna_url.endswith("s3cret@db:5432/optuna")  # the run-time value is untouched
    from sweep.config.loading import dump_yaml

    assert "s3cret" not in dump_yaml(cfg) and "s3cret" in dump_yaml(cfg, secrets=True)


# ------------------------------------------------------------------ evaluation, metrics, champion
GEN = {"prompts": 8, "judge": "builtin:demo", "every": "eval"}


def test_generation_metrics_need_an_evaluation_and_a_judge():
    with pytest.raises(ConfigError, match="needs an `evaluation` section"):
        load_config({"sweep": {"metric": {"name": "eval/gen/win_rate"}}})
    with pytest.raises(ConfigError, match="needs `evaluation.judge`"):
        load_config({"sweep": {"metric": {"name": "eval/gen/reward"}}, "evaluation": {"every": "eval"}})
    with pytest.raises(ConfigError, match="unknown generation metric 'eval/gen/bleu'"):
        load_config({"sweep": {"metric": {"name": "eval/gen/bleu"}}, "evaluation": GEN})
    # length and kl need no judge
    assert load_config({"sweep": {"metric": {"name": "eval/gen/kl", "goal": "minimize"}},
                        "evaluation": {"every": "eval"}}).evaluation.judge is None


def test_a_generation_metric_that_ranks_trials_is_evaluated_every_time():
    with pytest.raises(ConfigError, match="set evaluation.every: eval"):
        load_config({"sweep": {"metric": {"name": "eval/gen/win_rate"}}, "evaluation": {**GEN, "every": "final"}})
    # A second objective or a champion constraint is read at the end only: final is enough.
    cfg = load_config({"sweep": {"metrics": [{"name": "eval/rewards/accuracies"}, {"name": "eval/gen/kl", "goal": "minimize"}],
                                 "champion": {"by": "eval/gen/win_rate", "constraints": {"eval/gen/kl": {"max": 5}}}},
                       "evaluation": {**GEN, "every": "final"}})
    assert cfg.sweep.metric.name == "eval/rewards/accuracies"
    assert [m.name for m in cfg.sweep.objectives] == ["eval/rewards/accuracies", "eval/gen/kl"]
    assert cfg.sweep.goal_of("eval/gen/kl") == "minimize" and cfg.sweep.goal_of("eval/gen/win_rate") is None


def test_metrics_name_the_metric_and_conflicts_are_refused():
    with pytest.raises(ConfigError, match="not the first of `metrics`"):
        load_config({"sweep": {"metric": {"name": "loss"}, "metrics": [{"name": "eval/loss"}, {"name": "eval/rewards/margins"}]}})
    with pytest.raises(ConfigError, match="names a metric twice"):
        load_config({"sweep": {"metrics": [{"name": "eval/loss"}, {"name": "eval/loss"}]}})
    with pytest.raises(ConfigError) as err:
        load_config({"sweep": {"champion": {"by": "eval/loss", "constraints": {"eval/rewards/margins": {}}}}})
    assert "give `max`, `min` or both" in str(err.value)


def test_judges_are_one_of_three_kinds():
    assert load_config({"evaluation": {"judge": {"reward_model": "/models/rm"}}}).evaluation.judge_label() \
        == "reward_model:/models/rm"
    python = load_config({"evaluation": {"judge": {"python": "my_rules:score"}}}).evaluation
    assert python.judge_label() == "python:my_rules:score"
    for bad in ("builtin:gpt4", {"python": "no colon"}, {"reward_model": ""}, {"python": "m:f", "extra": 1}):
        with pytest.raises(ConfigError) as err:
            load_config({"evaluation": {"judge": bad}})
        assert any(f.startswith("evaluation.judge") for f in fields(err.value)), (bad, fields(err.value))


def test_a_judge_round_trips_as_written():
    for judge in ("builtin:demo", {"reward_model": "/models/rm", "batch_size": 4}):
        dumped = load_config({"evaluation": {"judge": judge}}).model_dump(mode="json")
        assert load_config(dumped).model_dump(mode="json") == dumped
    assert load_config({"evaluation": {"judge": "builtin:demo"}}).model_dump(mode="json")["evaluation"]["judge"] \
        == "builtin:demo"
    with pytest.raises(ConfigError, match="exactly one of"):
        load_config({"evaluation": {"judge": {"python": "a:b", "reward_model": "/m"}}})


def test_fractional_gpus_per_worker_share_a_gpu_and_are_refused_where_they_cannot():
    """resources.gpus_per_worker: what a trial's workers (and its reference pass or tokenization
    task) ask Ray for; validated here on CPU (no GPU runs in this suite)."""
    from sweep.engine.trainer import build_trainer
    from sweep.study.coordinator import task_options

    cfg = load_config({"resources": {"use_gpu": True, "gpus_per_worker": 0.25}})
    assert cfg.resources.gpus() == 0.25 and task_options(cfg)["num_gpus"] == 0.25
    scaling = build_trainer(cfg, None, run_name="r", storage_path="/tmp/unused").scaling_config
    assert scaling.use_gpu and scaling.resources_per_worker == {"CPU": 1, "GPU": 0.25}
    assert scaling.total_resources["GPU"] == 0.25
    whole = load_config({"resources": {"use_gpu": True, "num_workers": 2}})
    assert build_trainer(whole, None, run_name="r", storage_path="/tmp/unused").scaling_config.total_resources["GPU"] == 2
    assert task_options(load_config({}))["num_gpus"] == 0
    for bad, why in (({"gpus_per_worker": 0.5}, "use_gpu is false"),
                     ({"use_gpu": True, "num_workers": 2, "gpus_per_worker": 0.5}, "needs num_workers: 1"),
                     ({"use_gpu": True, "gpus_per_worker": 2}, "less than or equal to 1"),
                     ({"use_gpu": True, "gpus_per_worker": 0}, "greater than 0")):
        with pytest.raises(ConfigError, match=why) as err:
            load_config({"resources": bad})
        assert fields(err.value) == ["resources.gpus_per_worker"]
    swept = load_config({"resources": {"use_gpu": True}, "sweep": {"parameters": {
        "resources.gpus_per_worker": {"values": [0.25, 0.5]}}}})
    assert config_with(swept, {"resources.gpus_per_worker": 0.5}).resources.gpus() == 0.5
