"""The run config of the real-data CLIP track: TOML sections, loading, ``--set`` overrides.

A run config is a TOML file with the sections below (every field has a default; ``real_data/*.toml``
are the shipped configs)::

    [model]        which registered CLIP (models.list_models()) and its compute dtype
    [data]         the training pairs: dataset, root, caption variant, tokenizer, sizes
    [train]        steps, batch, AdamW and its schedule, objective, seed, logging and checkpoints
    [eval]         periodic zero-shot evaluation during training
    [distributed]  multi-host initialisation

Every section is a frozen dataclass that validates itself through the package's config layer
(:mod:`mmcl_theory.config`): a bad value raises :class:`~mmcl_theory.config.ConfigError` (a
ValueError) naming the field, the value and what is allowed; an unknown section or field, or a value
of the wrong TOML type, is refused the same way. ``--set SECTION.FIELD=VALUE`` overrides are parsed
by the field's declared type (``parse_value``: booleans are true/false, floats finite, lists and
tables in TOML syntax). Relative paths in the file are relative to the file's folder; ``${VAR}``
is expanded and an unset variable is an error.

Everything that can be checked without reading data is checked here, so a run never fails on a
config value after minutes of data loading.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Sequence

from mmcl_theory.clip import models
from mmcl_theory.clip.objectives import OBJECTIVES, Objective, get_objective
from mmcl_theory.config import (ConfigError, as_floats, check_choice, check_range, field_types, parse_value,
                                section_from_dict, split_override)

DATASETS = ("synthetic", "tiny_imagenet", "coco", "cc3m", "cc12m", "csv", "imagenet_captions", "webdataset")
"""data.dataset: 'synthetic' (random pairs, no files) or a training set of mmcl_theory.clip.data."""

CONTRASTIVE_LOSSES = ("infonce", "linear")
"""train.loss: the contrastive loss of train.objective = 'clip' (symmetric InfoNCE or the theory's linear loss; clip.objectives.step_objective)."""

LABELLED_DATASETS = {"synthetic": "softmax", "tiny_imagenet": "softmax", "imagenet_captions": "softmax",
                     "coco": "sigmoid"}
"""data.dataset -> the supervised baseline's loss on its labels: single-label softmax (Tiny ImageNet
wnids, ImageNet-Captions wnids, random classes of the synthetic set) or multi-label sigmoid (COCO
instance categories). The other sets have captions only."""

TOKENIZERS = ("clip_bpe", "train")
DTYPES = ("auto", "float32", "bfloat16")
CLASS_SPACES = ("imagenet1k", "tiny_imagenet")

MIN_TRAINED_VOCAB_SIZE = 2 * 256 + 3
"""Smallest vocabulary the data layer's BPE trainer accepts: 256 byte symbols, their 256 word-end
forms, and <pad>, SOT, EOT (clip.data.tokenizer; a test checks the two agree)."""

MAX_INT = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """name: a registry name (models.list_models()); dtype: compute dtype, 'auto' = bf16 on GPU, else float32;
    text_layers: depth of the text transformer (0 = the registry's; the CLIP benchmark's curtailed
    setting is models.CURTAILED_TEXT_LAYERS)."""

    name: str = "ViT-test"
    dtype: str = "auto"
    text_layers: int = 0

    def __post_init__(self):
        check_choice("model", "name", self.name, models.list_models())
        check_choice("model", "dtype", self.dtype, DTYPES)
        check_range("model", "text_layers", self.text_layers, 0, 1024, integer=True)


@dataclasses.dataclass(frozen=True)
class DataSection:
    """The training pairs.

    dataset: one of DATASETS; root: its folder or file (required unless 'synthetic');
    caption_variant: the data layer's text variant ('caption', 'label', 'rich', 'caption-minus:...');
    tokenizer: 'train' (a BPE of at most vocab_size ids trained on the training texts, saved as
    WORKDIR/tokenizer.json) or 'clip_bpe' (CLIP's BPE read from bpe_path); vocab_size: for 'train'
    and for the synthetic set; context_length / image_size: 0 = the model's; cache_dir: where the
    decoded uint8 image cache goes ('' = WORKDIR/cache); num_examples: size of the synthetic set;
    options: keyword options of the data layer's loader (e.g. {per_class = 2}).
    """

    dataset: str = "synthetic"
    root: str = ""
    caption_variant: str = "caption"
    tokenizer: str = "train"
    bpe_path: str = ""
    vocab_size: int = 4096
    context_length: int = 0
    image_size: int = 0
    cache_dir: str = ""
    num_examples: int = 256
    options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        check_choice("data", "dataset", self.dataset, DATASETS)
        check_choice("data", "tokenizer", self.tokenizer, TOKENIZERS)
        check_range("data", "vocab_size", self.vocab_size, 64, 1_000_000, integer=True)
        check_range("data", "context_length", self.context_length, 0, 1024, integer=True)
        check_range("data", "image_size", self.image_size, 0, 1024, integer=True)
        check_range("data", "num_examples", self.num_examples, 1, MAX_INT, integer=True)
        if self.dataset != "synthetic":
            if not self.root:
                raise ConfigError("data.root = '' is not allowed: a folder or file (required unless "
                                  "data.dataset = 'synthetic')")
            if self.tokenizer == "train" and self.vocab_size < MIN_TRAINED_VOCAB_SIZE:
                raise ConfigError(f"data.vocab_size = {self.vocab_size} is not allowed with data.tokenizer = 'train': "
                                  f"an integer >= {MIN_TRAINED_VOCAB_SIZE} (the BPE trainer's byte alphabet + specials)")
            if self.tokenizer == "clip_bpe" and not self.bpe_path:
                raise ConfigError("data.bpe_path = '' is not allowed with data.tokenizer = 'clip_bpe': the path of "
                                  "bpe_simple_vocab_16e6.txt.gz")


@dataclasses.dataclass(frozen=True)
class TrainSection:
    """Optimisation and bookkeeping.

    AdamW (beta1, beta2, eps; weight_decay on weights with ndim >= 2 only) with a linear warm-up over
    warmup_steps from 0 to lr, then cosine decay to 0 at steps; grad_clip_norm > 0 clips the global
    gradient norm first. The batch of step s is a pure function of (seed, s).
    objective: one of mmcl_theory.clip.objectives.OBJECTIVES ('clip', 'supervised', 'slip', 'filip',
    'declip', 'defilip'); loss: the contrastive loss of 'clip' (one of CONTRASTIVE_LOSSES); ssl_weight,
    ssl_temperature, ssl_dim: SLIP's SimCLR term (weight, temperature, projection size); nn_weight,
    queue_size: the DeCLIP/DeFILIP nearest-neighbour term (weight, FIFO queue length >= batch_size).
    Metrics every log_every steps; a checkpoint every checkpoint_every steps (the 2 newest are kept,
    plus every keep_every-th step when keep_every > 0).
    """

    steps: int = 10
    batch_size: int = 8
    lr: float = 5e-4
    warmup_steps: int = 0
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip_norm: float = 0.0
    loss: str = "infonce"
    objective: str = "clip"
    ssl_weight: float = 1.0
    ssl_temperature: float = 0.1
    ssl_dim: int = 256
    nn_weight: float = 0.5
    queue_size: int = 65536
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_every: int = 0

    @property
    def objective_spec(self) -> Objective:
        """The Objective record named by ``objective`` (clip.objectives.OBJECTIVES)."""
        return get_objective(self.objective)

    def __post_init__(self):
        for name in ("steps", "log_every", "checkpoint_every"):
            check_range("train", name, getattr(self, name), 1, MAX_INT, integer=True)
        check_range("train", "batch_size", self.batch_size, 2, MAX_INT, integer=True)  # contrastive: >= 2
        check_range("train", "warmup_steps", self.warmup_steps, 0, self.steps - 1, integer=True)
        check_range("train", "keep_every", self.keep_every, 0, MAX_INT, integer=True)
        check_range("train", "seed", self.seed, 0, MAX_INT, integer=True)
        check_range("train", "lr", self.lr, 0, 1e3, open_low=True)
        check_range("train", "weight_decay", self.weight_decay, 0, 10)
        check_range("train", "beta1", self.beta1, 0, 0.999999)
        check_range("train", "beta2", self.beta2, 0, 0.999999)
        check_range("train", "eps", self.eps, 0, 1, open_low=True)
        check_range("train", "grad_clip_norm", self.grad_clip_norm, 0, 1e9)
        check_choice("train", "loss", self.loss, CONTRASTIVE_LOSSES)
        check_choice("train", "objective", self.objective, tuple(OBJECTIVES))
        check_range("train", "ssl_weight", self.ssl_weight, 0, 1e6)
        check_range("train", "nn_weight", self.nn_weight, 0, 1e6)
        check_range("train", "ssl_temperature", self.ssl_temperature, 0, 1e3, open_low=True)
        check_range("train", "ssl_dim", self.ssl_dim, 1, 65536, integer=True)
        smallest_queue = self.batch_size if self.objective_spec.queue else 1
        check_range("train", "queue_size", self.queue_size, smallest_queue, MAX_INT, integer=True)
        if self.loss != "infonce" and not self.objective_spec.loss_choice:
            raise ConfigError(f"train.loss = {self.loss!r} is not allowed with train.objective = {self.objective!r}: "
                              "'infonce' (train.loss chooses the contrastive loss of objective 'clip' only)")
        as_floats(self, ("lr", "weight_decay", "beta1", "beta2", "eps", "grad_clip_norm", "ssl_weight",
                         "ssl_temperature", "nn_weight"))


@dataclasses.dataclass(frozen=True)
class EvalSection:
    """Periodic zero-shot evaluation every ``every`` steps (0 = never) on ``datasets`` (the names of
    mmcl_theory.clip.zero_shot). Data under ``root`` ('{dataset}' is replaced by the name) or
    ``roots[name]``; ``options[name]``: keyword options of the data layer's loader (e.g. per_class);
    ``templates``: JSON list of prompt templates ('' = the data layer's built-in set);
    ``class_space``: the classes texture-vs-shape categories aggregate over; ``max_examples``: a
    random subset per dataset (0 = all)."""

    every: int = 0
    datasets: tuple[str, ...] = ()
    root: str = ""
    roots: dict = dataclasses.field(default_factory=dict)
    options: dict = dataclasses.field(default_factory=dict)
    templates: str = ""
    class_space: str = "imagenet1k"
    batch_size: int = 256
    max_examples: int = 0

    def __post_init__(self):
        check_range("eval", "every", self.every, 0, MAX_INT, integer=True)
        check_range("eval", "batch_size", self.batch_size, 1, MAX_INT, integer=True)
        check_range("eval", "max_examples", self.max_examples, 0, MAX_INT, integer=True)
        check_choice("eval", "class_space", self.class_space, CLASS_SPACES)
        object.__setattr__(self, "datasets", tuple(self.datasets))
        if self.every and not self.datasets:
            raise ConfigError(f"eval.datasets = [] is not allowed when eval.every = {self.every}: at least one name")


@dataclasses.dataclass(frozen=True)
class DistributedSection:
    """Multi-host: when enabled, jax.distributed.initialize(coordinator_address, num_processes,
    process_id) (empty/negative values let JAX detect them from the cluster environment)."""

    enabled: bool = False
    coordinator_address: str = ""
    num_processes: int = -1
    process_id: int = -1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One run: the five sections, plus the checks that span two of them."""

    model: ModelSection
    data: DataSection
    train: TrainSection
    eval: EvalSection
    distributed: DistributedSection

    def __post_init__(self):
        objective = self.train.objective_spec
        if objective.labels and self.data.dataset not in LABELLED_DATASETS:
            raise ConfigError(f"data.dataset = {self.data.dataset!r} is not allowed with train.objective = 'supervised': "
                              f"a set with class labels, one of {', '.join(LABELLED_DATASETS)}")
        if objective.tokens:
            length = self.data.context_length or models.model_config(self.model.name).text.context_length
            if length < 2:
                raise ConfigError(f"data.context_length = {self.data.context_length} is not allowed with train.objective = "
                                  f"{objective.name!r}: an integer >= 2 (token-wise similarity needs text tokens besides EOT)")
        if self.eval.every and self.data.dataset == "synthetic":
            raise ConfigError(f"eval.every = {self.eval.every} is not allowed when data.dataset = 'synthetic': 0 "
                              "(zero-shot evaluation needs a real dataset's tokenizer)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {"model": ModelSection, "data": DataSection, "train": TrainSection, "eval": EvalSection,
            "distributed": DistributedSection}

PATH_FIELDS = {"data": ("root", "bpe_path", "cache_dir"), "eval": ("root", "templates")}
"""Fields holding paths (and eval.roots, a table of them): resolved on load, stored by name in results."""


def config_from_dict(raw: dict) -> TrainConfig:
    """Build and validate a TrainConfig from a nested dict as read from TOML."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config = {raw!r} is not allowed: a table of sections")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section(s) {', '.join(unknown)}: allowed {', '.join(SECTIONS)}")
    return TrainConfig(**{name: section_from_dict(cls, raw.get(name, {}), name) for name, cls in SECTIONS.items()})


def _expand(field: str, value: str, base: Path | None) -> str:
    """$VARs expanded (unset: ConfigError); a relative path made absolute against ``base`` when given."""
    expanded = os.path.expandvars(value)
    if "$" in expanded:
        raise ConfigError(f"{field} = {value!r}: environment variable not set (see real_data/README.md)")
    if base is None or not expanded or os.path.isabs(expanded):
        return expanded
    return str((base / expanded).resolve())


def _resolve_paths(raw: dict, base: Path | None) -> None:
    """In place: expand $VARs in every path field; with ``base``, make relative paths relative to it."""
    for section, fields in PATH_FIELDS.items():
        table = raw.get(section)
        if isinstance(table, dict):
            for f in fields:
                if isinstance(table.get(f), str):
                    table[f] = _expand(f"{section}.{f}", table[f], base)
    roots = raw["eval"].get("roots") if isinstance(raw.get("eval"), dict) else None
    if isinstance(roots, dict):
        for k, v in roots.items():
            if isinstance(v, str):
                roots[k] = _expand(f"eval.roots.{k}", v, base)


def apply_overrides(raw: dict, overrides: Sequence[str]) -> None:
    """In place: ``SECTION.FIELD=VALUE`` items parsed by the field's declared type (see module doc).
    Paths given on the command line are relative to the working directory."""
    for item in overrides:
        key, text = split_override(item)
        section, dot, field = key.partition(".")
        if not (dot and section and field):
            raise ConfigError(f"--set {item!r} must look like SECTION.FIELD=VALUE (e.g. train.steps=100)")
        if section not in SECTIONS:
            raise ConfigError(f"--set {item!r}: unknown section {section!r}: allowed {', '.join(SECTIONS)}")
        types = field_types(SECTIONS[section])
        if field not in types:
            raise ConfigError(f"--set {item!r}: unknown field {key!r}: allowed "
                              f"{', '.join(f'{section}.{f}' for f in types)}")
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] = {table!r} is not allowed: a table")
        table[field] = parse_value(key, text, types[field])
    _resolve_paths(raw, None)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a TOML run config, apply overrides, validate (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config = {str(path)!r}: no such file (a TOML run config, e.g. real_data/*.toml)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config = {str(path)!r}: not valid TOML ({e})") from None
    _resolve_paths(raw, path.parent)
    apply_overrides(raw, overrides)
    return config_from_dict(raw)


def portable_name(path: str) -> str:
    """A path as it may appear in a result file: its last component only ('' stays ''), so no result
    records a folder of the machine that produced it ('/data/{dataset}' -> '{dataset}')."""
    return Path(path).name if path else ""


def portable_dict(cfg: TrainConfig) -> dict:
    """cfg.to_dict() with every path field reduced to its name (portable_name): the provenance copy."""
    out = cfg.to_dict()
    for section, fields in PATH_FIELDS.items():
        for f in fields:
            out[section][f] = portable_name(out[section][f])
    out["eval"]["roots"] = {k: portable_name(v) for k, v in out["eval"]["roots"].items()}
    return out



MAX_LISTED_SKIPS = 100


def relative_location(where: str, root: str) -> str:
    """A skipped input's location relative to its dataset root, or the root file's folder (its name
    alone when outside it)."""
    base = root if os.path.isdir(root) else os.path.dirname(root)
    try:
        rel = os.path.relpath(where, base)
    except ValueError:
        return portable_name(where)
    return portable_name(where) if rel.startswith("..") else rel


def portable_skips(skipped: Sequence[tuple[str, str]], root: str) -> dict:
    """Skipped inputs [(where, reason)] as a result records them: {'count', 'items': the first
    MAX_LISTED_SKIPS [where relative to root, reason]}."""
    return {"count": len(skipped), "items": [[relative_location(w, root), r] for w, r in skipped[:MAX_LISTED_SKIPS]]}
