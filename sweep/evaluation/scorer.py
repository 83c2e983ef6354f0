"""The study's scorer: the reference model and the judge, loaded once per study and shared by
every trial (as a Ray actor the study driver starts; in-process for a single run or a test).

It completes the eval prompts with the reference model once per prompt set (kept under the
study's storage, so a resumed study reuses them), and for each trial's completions returns
their log-probs under the reference and the judge's scores. The trials never load the
reference model or the judge for this."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from sweep.config.schema import PrefsweepConfig
from sweep.evaluation.generation import completion_logps, generate
from sweep.evaluation.judges import JudgeError, load_judge
from sweep.storage.files import join, read_text, write_text

ACTOR_NAMESPACE = "prefsweep"


@dataclass
class ReferenceOutputs:
    """The reference model's completions of a prompt set, and the judge's scores of them."""

    completion_ids: list[list[int]]
    texts: list[str]
    scores: list[float] | None


def prompt_key(cfg: PrefsweepConfig, prompt_ids: list[list[int]]) -> str:
    """Names one reference completion set: the prompts, the reference model, the generation
    settings and the judge."""
    ecfg = cfg.evaluation
    blob = json.dumps({"prompts": prompt_ids, "model": cfg.model.ref_name_or_path or cfg.model.name_or_path,
                       "dtype": cfg.model.dtype, "judge": ecfg.judge_label(),
                       "generation": ecfg.model_dump(mode="json", include={"max_new_tokens", "temperature", "top_p", "seed",
                                                                          "batch_size"})},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Scorer:
    def __init__(self, config: dict[str, Any], study_dir: str | None = None, device: str = "cpu"):
        self.cfg = PrefsweepConfig.model_validate(config)
        self.study_dir = study_dir
        self.device = device
        self._model = self._tokenizer = self._judge = None
        self._references: dict[str, ReferenceOutputs] = {}

    def ready(self) -> bool:
        """Load the reference model and the judge now (a judge that cannot load fails here)."""
        self._load()
        return True

    def _load(self) -> None:
        if self._model is not None:
            return
        from sweep.models.loading import load_causal_lm, load_tokenizer

        model = self.cfg.model
        name = model.ref_name_or_path or model.name_or_path
        self._tokenizer = load_tokenizer(name, trust_remote_code=model.trust_remote_code)
        self._model = load_causal_lm(name, dtype=model.dtype, trust_remote_code=model.trust_remote_code,
                                     device=self.device)
        self._model.requires_grad_(False)
        judge = self.cfg.evaluation.judge
        self._judge = load_judge(judge, self.device) if judge is not None else None

    def reference(self, prompt_ids: list[list[int]], prompt_texts: list[str]) -> ReferenceOutputs:
        """The reference's completions of these prompts: computed on first use, then kept."""
        key = prompt_key(self.cfg, prompt_ids)
        if key in self._references:
            return self._references[key]
        path = join(self.study_dir, "evaluation", f"reference-{key}.json") if self.study_dir else None
        saved = read_text(path) if path else None
        if saved:
            outputs = ReferenceOutputs(**json.loads(saved))
        else:
            self._load()
            ids = generate(self._model, self._tokenizer, prompt_ids, self.cfg.evaluation, self.device)
            texts = self._tokenizer.batch_decode(ids, skip_special_tokens=True)
            scores = self._judge.score(prompt_texts, texts) if self._judge else None
            outputs = ReferenceOutputs(ids, texts, scores)
            if path:
                write_text(path, json.dumps(asdict(outputs)))
        self._references[key] = outputs
        return outputs

    def score(self, prompt_ids: list[list[int]], prompt_texts: list[str], completion_ids: list[list[int]],
              completions: list[str]) -> tuple[list[float], list[float] | None]:
        """(log pi_ref(y|x) per completion, the judge's score per completion or None)."""
        self._load()
        ref_logps = completion_logps(self._model, prompt_ids, completion_ids, self._tokenizer.pad_token_id, self.device,
                                     batch_size=self.cfg.evaluation.batch_size)
        scores = self._judge.score(prompt_texts, completions) if self._judge else None
        return ref_logps, scores


class ScorerClient:
    """What a training worker holds: the study's scorer actor (by name), or a Scorer of its own
    (a single run, a test). An actor's failure comes back as a JudgeError with its message,
    not a RayError: the driver reads a RayError as a lost worker and would restart the trial."""

    def __init__(self, config: dict[str, Any], actor: dict[str, str] | None, study_dir: str | None = None):
        if actor:
            import ray

            self._actor = ray.get_actor(actor["name"], namespace=actor.get("namespace", ACTOR_NAMESPACE))
            self._local = None
        else:
            self._actor, self._local = None, Scorer(config, study_dir)

    def _call(self, method: str, *args):
        if self._local is not None:
            return getattr(self._local, method)(*args)
        import ray

        try:
            return ray.get(getattr(self._actor, method).remote(*args))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else None
            raise JudgeError(str(cause) if cause is not None else str(exc).strip().splitlines()[-1]) from None

    def reference(self, prompt_ids, prompt_texts) -> ReferenceOutputs:
        return self._call("reference", prompt_ids, prompt_texts)

    def score(self, prompt_ids, prompt_texts, completion_ids, completions):
        return self._call("score", prompt_ids, prompt_texts, completion_ids, completions)
