"""Built-in models that need no network: `builtin:tiny-gpt2` (random init) and
`builtin:tiny-gpt2-sft` (the same, briefly fine-tuned on the demo answers: sweep.models.sft_build).

A small GPT-2 with a real byte-level BPE fast tokenizer, built on first use into
`$PREFSWEEP_CACHE` (default `~/.cache/prefsweep`) in Hugging Face layout, so everything
downstream loads it with the ordinary `from_pretrained` calls.

Every node of a Ray cluster builds it independently, so the build is deterministic bit for
bit: the tokenizer is trained on a corpus this module generates from an embedded word list
(never on the demo data, so regenerating the data cannot change the tokenizer), and the
weights are drawn from an integer hash, not from torch's RNG, whose normal sampler takes
different (SIMD) code paths on different CPUs. The cache subdirectory is named after a hash
of the recipe, so a changed recipe never reuses a stale build.

Tokens: `<|endoftext|>` is EOS (and BOS, GPT-2 style; the tokenizer adds neither by itself).
Padding uses a separate `<|pad|>` token, so code that masks labels by `pad_token_id` can never
mask the EOS that marks the end of a completion.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np

from sweep.data.sources import builtin_data_path
from sweep.models.sft_build import SFT_RECIPE, train_sft

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS: tuple[str, ...] = ("tiny-gpt2", "tiny-gpt2-sft")

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
RECIPE_VERSION = 1  # bump on any change to the build code that the hash below cannot see

TINY_GPT2 = {
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 128,
    "n_inner": 512,
    "n_positions": 512,
    # Dropout off: DPO-style objectives compare policy and reference log-probs, and dropout
    # noise would make the two differ before any training.
    "resid_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "attn_pdrop": 0.0,
}
VOCAB_SIZE = 2048
WEIGHT_SEED = 20240917
CORPUS_SEED = 7
CORPUS_SENTENCES = 6000

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('roles must be system, user or assistant, got ' + message['role']) }}"
    "{% endif %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] | trim }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

# Everyday English for the tokenizer corpus: wide enough that ordinary prompts and answers
# become mostly whole-word tokens. Append-only edits still change the hash (and the cache).
_WORDS = """
the a an and or but if then so because when while where what which who whom whose why how
is are was were be been being am do does did done have has had having will would can could
shall should may might must need want like know think say said tell told ask asked give
given take took make made get got go going went come came see saw look find found use used
try tried help helped keep kept let put set show start stop run walk talk read write learn
teach work play live feel seem turn move pay buy sell build cook clean wash fix plan check
choose open close begin end wait stay leave bring hold carry pick drink eat sleep rest grow
change follow add mix cut bake boil fry heat cool save spend share send call meet join visit
I you he she it we they me him her us them my your his its our their this that these those
here there now today tomorrow yesterday always never often sometimes usually again also only
just very really quite too more most less least much many few some any every each all both
no not none nothing something anything everything someone anyone everyone thing things
good great nice fine bad better best worse worst easy hard simple quick slow fast small big
large little long short high low new old young early late right wrong true false sure happy
sad kind polite rude helpful useful clear calm quiet loud safe healthy fresh warm cold hot
dry wet soft strong weak cheap free busy ready important possible different same whole
first second third next last other another own such few several half full empty main basic
time day week month year morning evening night hour minute moment home house room kitchen
garden school office city town street road car bus train bike bicycle plane trip travel
money budget bank price cost food meal bread rice pasta soup salad fruit apple banana water
coffee tea milk sugar salt egg cheese meat fish vegetable tomato potato recipe oven pan
book story poem letter email phone computer laptop screen keyboard program code python
software website internet music song guitar piano drum art painting drawing photo camera
movie film game sport football soccer tennis running swimming yoga exercise gym health body
sleep dream mind idea question answer problem solution reason way step tip advice hint plan
goal habit skill practice lesson class course test exam study language word sentence grammar
friend family parent child mother father brother sister dog cat pet bird plant tree flower
weather rain snow sun wind cloud sky sea river lake mountain forest beach park animal horse
job career interview meeting project team manager boss resume salary market business company
history science math physics chemistry biology space planet star moon earth energy climate
please thank thanks sorry welcome hello hi dear glad happy pleased certainly absolutely
great question of course happy to help hope this helps good luck let me know feel free
whatever ugh boring stupid annoying pointless useless waste nobody cares figure out yourself
stop asking leave alone not my problem do not care go away no idea who cares
one two three four five six seven eight nine ten hundred thousand minutes hours days weeks
user assistant system model data train training eval reward chosen rejected prompt reply
to of in on at by for with from about into over under after before up down out off than as
what's it's don't can't I'm you're that's there's let's won't isn't doesn't didn't I'll
"""
_TEMPLATES = (
    "{A} {b} {c} {d}.",
    "Can you {v} me {d} the {n}?",
    "How do I {v} a {j} {n}?",
    "{A} is {j}, and the {n} is {k}.",
    "User: {A} {b} {n}?\nAssistant: {S} {b} {c} {n}.",
    "System: You are a {j} assistant.\nUser: {A} {n}.\nAssistant:",
    "I think {b} {n} {v} {c} {d} {k} {n}!",
    "Please {v} the {n}, {b} {c}; then {v} {d}.",
    "{A} {b}: {N1} {n} or {N2} {n}s in {N3} {u}.",
    "\"{A},\" {b} said. \"{S} {c} {d}!\"",
)


def is_builtin(name_or_path: str) -> bool:
    return str(name_or_path).startswith(BUILTIN_PREFIX)


def builtin_path(name_or_path: str) -> Path:
    """The HF-layout directory of a built-in model, building it on first use."""
    name = _builtin_name(name_or_path)
    target = cache_root() / builtin_identity(name_or_path)
    if not target.is_dir():
        if name == "tiny-gpt2":
            _build_atomically(target, _build_tiny_gpt2)
        else:  # the SFT model starts from the base: built (or found) first
            base = builtin_path(BUILTIN_PREFIX + "tiny-gpt2")
            _build_atomically(target, lambda out: train_sft(base, out, _demo_train_rows()))
    return target


def builtin_identity(name_or_path: str) -> str:
    """`NAME-vVERSION-HASH`: names the cache directory and, in reference-cache keys, the model;
    changes whenever anything that shapes the weights does."""
    name = _builtin_name(name_or_path)
    if name == "tiny-gpt2":
        return f"{name}-v{RECIPE_VERSION}-{recipe_hash()}"
    blob = json.dumps({"base": builtin_identity(BUILTIN_PREFIX + "tiny-gpt2"), "sft": SFT_RECIPE,
                       "data": hashlib.sha256(_demo_train_path().read_bytes()).hexdigest()}, sort_keys=True)
    return f"{name}-v{RECIPE_VERSION}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _demo_train_path() -> Path:
    return builtin_data_path("builtin:demo/train")


def _demo_train_rows() -> list[dict]:
    with _demo_train_path().open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def cache_root() -> Path:
    configured = os.environ.get("PREFSWEEP_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "prefsweep"


def recipe_hash() -> str:
    recipe = {
        "model": TINY_GPT2,
        "vocab_size": VOCAB_SIZE,
        "weight_seed": WEIGHT_SEED,
        "corpus_seed": CORPUS_SEED,
        "corpus_sentences": CORPUS_SENTENCES,
        "words": _WORDS,
        "templates": _TEMPLATES,
        "chat_template": CHAT_TEMPLATE,
        "tokens": [EOS_TOKEN, PAD_TOKEN],
    }
    blob = json.dumps(recipe, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _builtin_name(name_or_path: str) -> str:
    if not is_builtin(name_or_path):
        raise ValueError(f"{name_or_path!r} is not a built-in model (those start with {BUILTIN_PREFIX!r})")
    name = str(name_or_path)[len(BUILTIN_PREFIX):]
    if name not in BUILTIN_MODELS:
        known = ", ".join(BUILTIN_PREFIX + m for m in BUILTIN_MODELS)
        raise ValueError(f"unknown built-in model {name_or_path!r}; available: {known}")
    return name


def _build_atomically(target: Path, build) -> None:
    # Ray workers on one node race to build the same model: each builds into its own temp
    # dir and renames it into place. rename() is atomic and fails when the target exists,
    # so the loser discards its copy and readers never see a half-written directory.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        build(tmp)
        _make_readable(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _make_readable(directory: Path) -> None:
    # mkdtemp and safetensors create owner-only files; a shared cache must be readable by all.
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)


def _build_tiny_gpt2(out_dir: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        **TINY_GPT2,
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.from_numpy(_initial_value(name, tuple(param.shape), config.n_layer)))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _initial_value(name: str, shape: tuple[int, ...], n_layer: int) -> np.ndarray:
    """GPT-2's own init scheme, with platform-independent random numbers."""
    if name.endswith(".bias") or (".ln_" in name and name.endswith(".weight")):
        return np.full(shape, 1.0 if name.endswith(".weight") else 0.0, dtype=np.float32)
    std = 0.02
    if name.endswith("c_proj.weight"):
        std /= (2 * n_layer) ** 0.5  # GPT-2 scales residual projections by depth
    seed = int.from_bytes(hashlib.sha256(f"{WEIGHT_SEED}:{name}".encode()).digest()[:8], "little")
    return (_approx_normal(seed, int(np.prod(shape))) * std).astype(np.float32).reshape(shape)


def _approx_normal(seed: int, count: int) -> np.ndarray:
    # Integer hashing (splitmix64) and exact float64 sums only: no transcendental functions,
    # whose last bits vary across CPUs and libm versions. The mean of 4 uniforms
    # (Irwin-Hall), rescaled to unit variance, is close enough to a normal for an init.
    mask = np.uint64(0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        x = (np.arange(4 * count, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        x = (x + np.uint64(seed)) & mask
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    uniform = (x >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    total = uniform.reshape(4, count).sum(axis=0)
    return (total - 2.0) * 3.0**0.5  # Irwin-Hall(4): mean 2, variance 1/3


def build_tokenizer():
    """A byte-level BPE fast tokenizer trained on the module's own corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,  # byte-level: nothing is ever unknown, but GPT-2 sets it too
        pad_token=PAD_TOKEN,
        padding_side="right",
        chat_template=CHAT_TEMPLATE,
        model_max_length=TINY_GPT2["n_positions"],
        clean_up_tokenization_spaces=False,
    )


def tokenizer_corpus() -> list[str]:
    rng = random.Random(CORPUS_SEED)
    words = _WORDS.split()
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    for _ in range(CORPUS_SENTENCES):
        pick = {key: rng.choice(words) for key in "bcdjknuv"}
        pick.update(A=rng.choice(words).capitalize(), S=rng.choice(words).capitalize())
        pick.update({f"N{i}": str(rng.randrange(1000)) for i in (1, 2, 3)})
        lines.append(rng.choice(_TEMPLATES).format(**pick))
    return lines
