"""Reading configs: YAML files, `--set a.b=value` overrides, and the checks that need the
whole config at once (every swept value must itself give a valid config)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from objectives.registry import get_objective, objective_names, resolve
from sweep.config.evaluation import GEN_PREFIX
from sweep.config.schema import PrefsweepConfig
from sweep.config.search import OBJECTIVE_KEY, branch_defaults, sample_rank, walk

MAX_DEPTH = 32  # nesting of any config value; the schema's deepest key is 5 levels down


class UntrustedLoader(yaml.SafeLoader):
    """YAML from a request or a --set value: no anchors/aliases (297 bytes of aliases expand
    to a million leaves once copied) and at most MAX_DEPTH levels of nesting."""

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not accepted", self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_untrusted_yaml(text: str) -> Any:
    return yaml.load(text, Loader=UntrustedLoader)  # noqa: S506 - a SafeLoader subclass


def config_mapping(text: str, where: str | None = None, field: str = "(yaml)") -> dict[str, Any]:
    """A config's YAML text as its mapping of sections, with one policy for every source (a file
    on the command line, a request body): UntrustedLoader's safe types, no aliases, at most
    MAX_DEPTH levels. An empty text is the defaults ({})."""
    try:
        data = load_untrusted_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError([(field, f"not valid YAML: {problem}{at}")], where) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([("(root)", "the config must be a mapping of sections")], where)
    return data


class ConfigError(ValueError):
    """A config the sweep refuses, with one `field: message` line per problem."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {field}: {message}" for field, message in problems)
        super().__init__(f"invalid config{where}:\n{lines}")


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(root)"


def from_validation_error(err: ValidationError, source: str | None = None, prefix: str = "") -> ConfigError:
    problems = []
    for e in err.errors():
        field = _loc(tuple(p for p in e["loc"]))
        problems.append(((prefix + field) if field != "(root)" or not prefix else prefix.rstrip("."), e["msg"]))
    return ConfigError(problems, source)


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError([(item, "expected KEY=VALUE, e.g. train.learning_rate=1e-4")], "--set")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError([(item, "empty key")], "--set")
    try:
        return key, load_untrusted_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError([(key, f"not a YAML value: {str(exc).splitlines()[0]}")], "--set") from None


def get_dotted(data: dict[str, Any], key: str) -> Any:
    """The value at `a.b.c` in a nested dict, None where a section is missing."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def set_dotted(data: dict[str, Any], key: str, value: Any, *, known: PrefsweepConfig | None = None) -> None:
    """Set `a.b.c` in a nested dict. Under `sweep.parameters` the rest of the key is one
    dotted parameter name (`sweep.parameters.objective.beta.values=[0.1]`)."""
    parts = key.split(".")
    if parts[:2] == ["sweep", "parameters"] and len(parts) > 2:
        params = data.setdefault("sweep", {}).setdefault(
            "parameters", known.sweep.model_dump(mode="json")["parameters"] if known else {}
        )
        _set_parameter(params, parts[2:], value)
        return
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError([(key, f"{part!r} is not a section")], "--set")
        node = child
    node[parts[-1]] = value


def _set_parameter(params: dict[str, Any], rest: list[str], value: Any) -> None:
    """`rest`: a dotted parameter name, then `.parameters.LABEL.` and a nested one (any depth),
    then perhaps a spec field (`objective.name.parameters.dpo.objective.beta.max`)."""
    if "parameters" in rest[1:]:
        at = rest.index("parameters", 1)
        spec = params.setdefault(".".join(rest[:at]), {})
        if at + 1 == len(rest):  # the whole mapping of branches
            spec["parameters"] = value
            return
        branches = spec["parameters"] = spec.get("parameters") or {}
        _set_parameter(branches.setdefault(rest[at + 1], {}), rest[at + 2:], value)
        return
    spec_keys = {"values", "value", "distribution", "min", "max", "q"}
    if rest[-1] in spec_keys and len(rest) > 1:
        params.setdefault(".".join(rest[:-1]), {})[rest[-1]] = value
    else:
        params[".".join(rest)] = value


def load_config(source: str | Path | dict[str, Any], overrides: list[str] = ()) -> PrefsweepConfig:
    """Load and fully check a config from a YAML path or a dict, with `--set` overrides."""
    if isinstance(source, dict):
        data, where = copy.deepcopy(source), None
    else:
        where = str(source)
        path = Path(source)
        if not path.is_file():
            raise ConfigError([("(file)", f"config file not found: {path}")], where)
        data = config_mapping(path.read_text(), where)
    resolved = [] if where is None else resolve_input_paths(data, Path(where).resolve().parent)
    defaults = PrefsweepConfig()
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value, known=defaults)
    try:
        config = PrefsweepConfig.model_validate(data)
    except ValidationError as err:
        raise from_validation_error(err, where) from None
    problems = sweep_problems(config)
    if problems:
        raise ConfigError(problems, where)
    config._resolved_paths = resolved
    return config


INPUT_PATHS = ("data.train.path", "data.eval.path", "model.name_or_path", "model.ref_name_or_path")


def resolve_input_paths(data: dict[str, Any], base: Path) -> list[str]:
    """Relative input paths of a config file that exist beside it become absolute, so the file
    means the same from any working directory; -> one note per path changed. Others stay
    relative to the working directory (a hub id such as `gpt2` is never a file there)."""
    notes = []
    for key in INPUT_PATHS:
        value = get_dotted(data, key)
        if not isinstance(value, str) or ":" in value or Path(value).is_absolute():
            continue
        candidate = (base / value).resolve()
        if candidate.exists() and candidate != Path(value).resolve():
            set_dotted(data, key, str(candidate))
            notes.append(f"{key}: {value} -> {candidate} (beside the config file)")
    return notes


def config_with(config: PrefsweepConfig, values: dict[str, Any]) -> PrefsweepConfig:
    """A copy of `config` with dotted keys set; raises ValidationError on a bad value."""
    data = config.model_dump(mode="json")
    for key, value in values.items():
        set_dotted(data, key, value)
    return PrefsweepConfig.model_validate(data)


def sweep_problems(config: PrefsweepConfig) -> list[tuple[str, str]]:
    """Checks across sections: every swept key exists, every edge value of every swept
    parameter (nested ones in their branch) validates, and the sweep metric is reported by every
    objective in play."""
    problems = parameter_problems(config)
    for name in config.objectives_in_play():
        try:
            objective = resolve(name)
        except (KeyError, ValueError) as err:
            problems.append(("sweep.parameters.objective.name", str(err)))
            continue
        for where, metric in config.sweep.named_metrics():
            bare = metric.removeprefix("eval/")
            # eval/gen/* come from the evaluation section (checked by the schema), not the objective.
            if metric.startswith(GEN_PREFIX) or bare in objective.metrics or bare == "tokens_per_second":
                continue
            problems.append((where, f"{name} does not report {metric!r}; it reports " + ", ".join(objective.metrics)))
        if objective.paired and config.data.format == "unpaired":
            problems.append(("data.format", f"objective {name} needs paired data (chosen/rejected) but data.format "
                             "is 'unpaired'; use an objective for labelled rows ("
                             + ", ".join(n for n in objective_names() if not get_objective(n).paired) + ")"))
    return problems


def parameter_problems(config: PrefsweepConfig) -> list[tuple[str, str]]:
    """Each swept parameter, nested ones included: a key that exists and may be swept, nested
    only below what it depends on, read by an objective of its branch, and every edge value
    valid together with the values its branch fixes."""
    problems: list[tuple[str, str]] = []
    base = config.model_dump(mode="json")
    for swept in walk(config.sweep.parameters):
        field, key, spec, branch = swept.path, swept.key, swept.spec, swept.branch
        if key.startswith(("sweep.", "tracking.", "storage.", "name")) or key == "resources":
            problems.append((field, "only model, data, objective, train and resources keys can be swept"))
            continue
        if not _has_path(base, key):
            problems.append((field, f"no config key {key!r}"))
            continue
        if config.sweep.method == "grid" and spec.kind not in ("categorical", "constant"):
            problems.append((field, f"method grid takes `values` lists only, this is distribution {spec.kind}; "
                             "use method bayes or random, or give values"))
        if config.sweep.method == "grid" and spec.parameters:
            problems.append((field, "method grid cannot branch (nested `parameters`): use method bayes or random"))
        if any(parent == key or sample_rank(key) < sample_rank(parent) for parent in swept.under):
            problems.append((field, f"{key} is decided before the value it is nested under; sweep it at top level"))
            continue
        unread = _unread(config, key, branch)
        if unread:
            problems.append((field, unread))
            continue
        for value in spec.edge_values():
            try:
                config_with(config, {**branch, key: value, **branch_defaults(spec, value)})
            except ValidationError as err:
                msg = "; ".join(e["msg"] for e in err.errors())
                where = "".join(f" with {k}={v!r}" for k, v in swept.under.items())
                problems.append((field, f"value {value!r} is invalid{where}: {msg}"))
                break
    return problems


def _unread(config: PrefsweepConfig, key: str, branch: dict[str, Any]) -> str | None:
    """Why `objective.X` would never be sampled in this branch (no objective there reads X), or None."""
    if not key.startswith("objective.") or key in (OBJECTIVE_KEY, "objective.loss_weights"):
        return None
    names = [branch[OBJECTIVE_KEY]] if OBJECTIVE_KEY in branch else config.objectives_in_play()
    hyperparameter = key.split(".", 1)[1]
    try:
        objectives = [resolve(name) for name in names]
    except (KeyError, ValueError):
        return None  # the objective names themselves are reported
    if any(hyperparameter in objective.hyperparameters for objective in objectives):
        return None
    return f"{' or '.join(o.name for o in objectives)} does not read {hyperparameter}, so it would never be sampled"


def _has_path(data: dict[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            # Optional sections (model.lora) exist in the schema even when null.
            return _schema_has_path(dotted)
        node = node[part]
    return True


def _schema_has_path(dotted: str) -> bool:
    from pydantic import BaseModel

    model: Any = PrefsweepConfig
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        annotation = fields[part].annotation
        model = next(
            (a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
    return True


def dump_yaml(config: PrefsweepConfig, *, secrets: bool = False) -> str:
    """The config as YAML, URL passwords masked unless `secrets` (a run-time file the job reads:
    write it with sweep.config.redact.write_private)."""
    return yaml.safe_dump(config.model_dump(mode="json") if secrets else config.public(), sort_keys=False)
