"""Train a CLIP from scratch: ``python -m mmcl_theory.clip.train --config real_data/NAME.toml --workdir DIR``.

One readable trainer (big_vision style). Sections: config, data, state and optimiser, the jitted
step, checkpoints and metrics, the loop, CLI.

- Loss: symmetric InfoNCE (``mmcl_theory.losses.infonce_loss``) or the linear contrastive loss.
- AdamW (b1, b2, eps from the config; open_clip defaults 0.9, 0.98, 1e-6), decay only on weights
  with ndim >= 2 (not norms, biases, class token, temperature); linear warm-up then cosine to 0.
- The step is jitted with its state donated, the batch sharded over all devices (mesh axis 'data'),
  the state replicated. bf16 compute on GPU, float32 on CPU (``model.dtype = "auto"``).
- The batch for step s is a pure function of (seed, s), so a resumed run sees the same batches as
  an uninterrupted one. Orbax checkpoints (atomic: written to a temporary folder, then renamed);
  on start the latest one in ``WORKDIR/checkpoints`` is restored and ``metrics.jsonl`` is cut back
  to it, so a kill -9 loses no steps.
- A non-finite loss stops the run before the next save: the last good checkpoint stays.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import mmcl_theory
from mmcl_theory.clip import models
from mmcl_theory.losses import infonce_loss, linear_contrastive_loss


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------
def _require(cond: bool, field: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ValueError(f"{field} = {value!r}: must be {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """name: a registry name (models.list_models()); dtype: compute dtype, 'auto' = bf16 on GPU."""

    name: str = "ViT-test"
    dtype: str = "auto"

    def __post_init__(self):
        _require(self.name in models.list_models(), "model.name", self.name, f"one of {models.list_models()}")
        _require(self.dtype in ("auto", "float32", "bfloat16"), "model.dtype", self.dtype,
                 "one of 'auto', 'float32', 'bfloat16'")


DATASETS = ("synthetic", "tiny_imagenet", "coco", "cc3m", "cc12m", "csv", "imagenet_captions", "webdataset")


@dataclasses.dataclass(frozen=True)
class DataSection:
    """Training pairs. dataset: one of DATASETS; root: its folder (env vars expanded);
    caption_variant: text variant of the data layer ('caption', 'label', 'rich', ...);
    tokenizer: 'clip_bpe' (CLIP's BPE, file at bpe_path) or 'train' (a BPE of vocab_size trained on
    the training texts, saved in the workdir); context_length overrides the model's;
    image_size overrides the model's; cache_dir: where the decoded uint8 image cache goes
    (default WORKDIR/cache); num_examples: size of the synthetic set."""

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
        _require(self.dataset in DATASETS, "data.dataset", self.dataset, f"one of {list(DATASETS)}")
        _require(self.tokenizer in ("clip_bpe", "train"), "data.tokenizer", self.tokenizer,
                 "one of 'clip_bpe', 'train'")
        _require(_is_int(self.vocab_size) and 64 <= self.vocab_size <= 1_000_000, "data.vocab_size",
                 self.vocab_size, "an integer in [64, 1000000]")
        _require(_is_int(self.context_length) and 0 <= self.context_length <= 1024, "data.context_length",
                 self.context_length, "an integer in [0, 1024] (0 = the model's)")
        _require(_is_int(self.image_size) and 0 <= self.image_size <= 1024, "data.image_size",
                 self.image_size, "an integer in [0, 1024] (0 = the model's)")
        _require(_is_int(self.num_examples) and self.num_examples >= 1, "data.num_examples",
                 self.num_examples, "an integer >= 1")
        _require(self.dataset == "synthetic" or bool(self.root), "data.root", self.root,
                 "a folder (required unless dataset = 'synthetic')")
        for name in ("root", "bpe_path", "cache_dir"):
            object.__setattr__(self, name, os.path.expandvars(getattr(self, name)))


@dataclasses.dataclass(frozen=True)
class TrainSection:
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
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    keep_every: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            v = getattr(self, name)
            _require(_is_int(v) and v >= 1, f"train.{name}", v, "an integer >= 1")
        _require(self.batch_size >= 2, "train.batch_size", self.batch_size, "an integer >= 2 (contrastive)")
        _require(_is_int(self.warmup_steps) and 0 <= self.warmup_steps < self.steps, "train.warmup_steps",
                 self.warmup_steps, f"an integer in [0, {self.steps - 1}] (below train.steps)")
        _require(_is_int(self.keep_every) and self.keep_every >= 0, "train.keep_every", self.keep_every,
                 "an integer >= 0 (0 = keep only the latest checkpoints)")
        _require(_is_num(self.lr) and 0 < self.lr <= 1e3, "train.lr", self.lr, "a number in (0, 1000]")
        _require(_is_num(self.weight_decay) and 0 <= self.weight_decay <= 10, "train.weight_decay",
                 self.weight_decay, "a number in [0, 10]")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            _require(_is_num(v) and 0 <= v < 1, f"train.{name}", v, "a number in [0, 1)")
        _require(_is_num(self.eps) and 0 < self.eps <= 1, "train.eps", self.eps, "a number in (0, 1]")
        _require(_is_num(self.grad_clip_norm) and self.grad_clip_norm >= 0, "train.grad_clip_norm",
                 self.grad_clip_norm, "a number >= 0 (0 = no clipping)")
        _require(self.loss in ("infonce", "linear"), "train.loss", self.loss, "one of 'infonce', 'linear'")
        _require(_is_int(self.seed) and self.seed >= 0, "train.seed", self.seed, "an integer >= 0")


@dataclasses.dataclass(frozen=True)
class EvalSection:
    """Periodic zero-shot evaluation every ``every`` steps (0 = never) on ``datasets`` (names of
    mmcl_theory.clip.evaluate). Data under ``root`` ('{dataset}' is replaced by the name) or
    ``roots[name]``; ``options[name]``: keyword options of the data layer's loader (e.g. per_class);
    ``templates``: JSON list of prompt templates ('' = the data layer's built-in set);
    ``class_space``: classes that texture-vs-shape categories aggregate over ('imagenet1k' or
    'tiny_imagenet'); ``max_examples``: random subset per dataset (0 = all)."""

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
        _require(_is_int(self.every) and self.every >= 0, "eval.every", self.every, "an integer >= 0")
        _require(_is_int(self.batch_size) and self.batch_size >= 1, "eval.batch_size", self.batch_size,
                 "an integer >= 1")
        _require(_is_int(self.max_examples) and self.max_examples >= 0, "eval.max_examples",
                 self.max_examples, "an integer >= 0 (0 = all)")
        _require(self.class_space in ("imagenet1k", "tiny_imagenet"), "eval.class_space", self.class_space,
                 "one of 'imagenet1k', 'tiny_imagenet'")
        object.__setattr__(self, "datasets", tuple(self.datasets))
        object.__setattr__(self, "root", os.path.expandvars(self.root))
        object.__setattr__(self, "roots", {k: os.path.expandvars(v) for k, v in self.roots.items()})
        _require(not (self.every and not self.datasets), "eval.datasets", list(self.datasets),
                 "non-empty when eval.every > 0")


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
    model: ModelSection
    data: DataSection
    train: TrainSection
    eval: EvalSection
    distributed: DistributedSection

    def __post_init__(self):
        _require(not (self.eval.every and self.data.dataset == "synthetic"), "eval.every", self.eval.every,
                 "0 when data.dataset = 'synthetic' (zero-shot evaluation needs a real dataset's tokenizer)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelSection, "data": DataSection, "train": TrainSection, "eval": EvalSection,
             "distributed": DistributedSection}


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def config_from_dict(raw: dict) -> TrainConfig:
    """Validate a nested dict (as read from TOML): unknown sections/fields and bad values raise ValueError."""
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ValueError(f"unknown config section(s) {sorted(unknown)}: allowed {sorted(_SECTIONS)}")
    sections = {}
    for name, cls in _SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ValueError(f"[{name}] = {table!r}: must be a table")
        fields = {f.name for f in dataclasses.fields(cls)}
        extra = set(table) - fields
        if extra:
            raise ValueError(f"unknown field(s) {sorted(f'{name}.{k}' for k in extra)}: allowed {sorted(fields)}")
        sections[name] = cls(**table)
    return TrainConfig(**sections)


_PATH_FIELDS = {"data": ("root", "bpe_path", "cache_dir"), "eval": ("root", "templates")}


def _resolve_paths(raw: dict, base: Path) -> None:
    """Make the file's relative paths (after $VAR expansion) relative to the config's folder."""
    def fix(field: str, v: str) -> str:
        expanded = os.path.expandvars(v)
        if "$" in expanded:
            raise ValueError(f"{field} = {v!r}: environment variable not set (see real_data/README.md)")
        return expanded if not expanded or os.path.isabs(expanded) else str((base / expanded).resolve())

    for section, fields in _PATH_FIELDS.items():
        table = raw.get(section)
        if isinstance(table, dict):
            for f in fields:
                if isinstance(table.get(f), str):
                    table[f] = fix(f"{section}.{f}", table[f])
    roots = raw.get("eval", {}).get("roots") if isinstance(raw.get("eval"), dict) else None
    if isinstance(roots, dict):
        for k, v in roots.items():
            if isinstance(v, str):
                roots[k] = fix(f"eval.roots.{k}", v)


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> TrainConfig:
    """Read a TOML run config, apply ``section.field=value`` overrides (TOML values), validate.
    Relative paths in the file are relative to the file's folder; $VARS are expanded."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config = {str(path)!r}: no such file")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: invalid TOML ({e})") from None
    _resolve_paths(raw, path.parent)
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, field = key.strip().partition(".")
        if not (sep and dot and section and field):
            raise ValueError(f"--set {item!r}: must look like section.field=value")
        raw.setdefault(section, {})[field] = _parse_value(value.strip())
    return config_from_dict(raw)


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainData:
    """Image-text pairs in memory or memory-mapped. images: uint8 (N, S, S, 3);
    tokens: int32 (N, L), or (N, K, L) for K captions per image (one drawn per step)."""

    images: np.ndarray
    tokens: np.ndarray
    eot_id: int
    vocab_size: int

    @property
    def num_examples(self) -> int:
        return self.images.shape[0]


def batch_indices(seed: int, step: int, batch_size: int, num_examples: int) -> np.ndarray:
    """Example indices of global batch ``step`` (0-based): epochs are seeded permutations, drop-last."""
    per_epoch = num_examples // batch_size
    if per_epoch == 0:
        raise ValueError(f"train.batch_size = {batch_size}: must be <= the number of examples {num_examples}")
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return perm[k * batch_size:(k + 1) * batch_size]


def host_batch(data: TrainData, seed: int, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's share of global batch ``step``: (images uint8, tokens int32)."""
    idx = batch_indices(seed, step, batch_size, data.num_examples)
    share = batch_size // jax.process_count()
    idx = idx[jax.process_index() * share:(jax.process_index() + 1) * share]
    order = np.argsort(idx)  # sorted reads are faster on memory-mapped caches
    images = np.empty((len(idx),) + data.images.shape[1:], np.uint8)
    images[order] = data.images[idx[order]]
    tokens = data.tokens[idx]
    if tokens.ndim == 3:
        pick = np.random.default_rng([seed, step, 1]).integers(0, tokens.shape[1], size=len(idx))
        tokens = tokens[np.arange(len(idx)), pick]
    return images, tokens.astype(np.int32)


def synthetic_data(num_examples: int, image_size: int, context_length: int, vocab_size: int,
                   seed: int) -> TrainData:
    """Random images and token sequences (EOT = vocab_size - 1 at a random position, 0-padded)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_examples, image_size, image_size, 3), dtype=np.uint8)
    tokens = rng.integers(1, vocab_size - 1, (num_examples, context_length), dtype=np.int32)
    length = rng.integers(2, context_length, num_examples)
    pos = np.arange(context_length)
    tokens = np.where(pos < length[:, None], tokens, 0)
    tokens[np.arange(num_examples), length] = vocab_size - 1
    return TrainData(images, tokens.astype(np.int32), eot_id=vocab_size - 1, vocab_size=vocab_size)


def build_train_data(cfg: TrainConfig, workdir: Path) -> TrainData:
    """The training pairs of ``cfg.data``; real datasets go through mmcl_theory.clip.data."""
    d = cfg.data
    base = models.model_config(cfg.model.name)
    size = d.image_size or base.vision.image_size
    ctx = d.context_length or base.text.context_length
    if d.dataset == "synthetic":
        return synthetic_data(d.num_examples, size, ctx, base.text.vocab_size if d.tokenizer == "clip_bpe"
                              else d.vocab_size, cfg.train.seed)
    return real_train_data(cfg, workdir, size, ctx)


def real_train_data(cfg: TrainConfig, workdir: Path, image_size: int, context_length: int) -> TrainData:
    """Load cfg.data.dataset through the data layer: texts of the caption variant (all captions of a
    sample for 'caption', one drawn per step), a tokenizer (trained, or CLIP's BPE) saved as
    WORKDIR/tokenizer.json and reused on resume, and a uint8 image cache at ``image_size``."""
    from mmcl_theory.clip import data

    d = cfg.data
    ds = data.load_training_set(d.dataset, d.root, **d.options)
    if ds.image_paths is None:
        raise ValueError(f"data.dataset = {d.dataset!r}: this set has captions but no images")
    if d.caption_variant == "caption" and ds.captions is not None:
        groups = ds.all_texts("caption")
    else:
        groups = [(t,) for t in ds.texts(d.caption_variant, seed=cfg.train.seed)]
    k = max(len(g) for g in groups)
    texts = [g[j % len(g)] if g else "" for g in groups for j in range(k)]  # ragged -> cycle to k
    tok_path = workdir / "tokenizer.json"
    if tok_path.is_file():
        tok = data.load_tokenizer(tok_path)
    elif d.tokenizer == "train":
        tok = data.train_tokenizer(texts, d.vocab_size, tok_path)
    else:
        tok = data.load_clip_bpe(d.bpe_path)
        tok.save(tok_path)
    tokens = tok.encode_batch(texts, context_length).reshape(len(groups), k, context_length)
    cache_dir = Path(d.cache_dir) if d.cache_dir else workdir / "cache"
    cache = data.build_cache(ds, cache_dir / f"{d.dataset}_{image_size}", image_size,
                             workers=min(8, os.cpu_count() or 1), progress=jax.process_index() == 0)
    return TrainData(cache.images, tokens[:, 0] if k == 1 else tokens, tok.eot_id, tok.vocab_size)


class Prefetcher:
    """Background thread producing host batches for steps start..stop-1, ``depth`` ahead."""

    def __init__(self, make: Callable[[int], Any], start: int, stop: int, depth: int = 3):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, args=(make, start, stop), daemon=True)
        self._thread.start()

    def _run(self, make, start, stop):
        for step in range(start, stop):
            try:
                self._queue.put((step, make(step), None))
            except Exception as e:  # surfaced in the training thread
                self._queue.put((step, None, e))
                return

    def get(self):
        step, batch, error = self._queue.get()
        if error is not None:
            raise error
        return step, batch


# ----------------------------------------------------------------------------------------------
# State and optimiser
# ----------------------------------------------------------------------------------------------
def compute_dtype(name: str):
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() == "gpu" else jnp.float32
    return jnp.dtype(name)


def lr_schedule(t: TrainSection) -> optax.Schedule:
    """Linear warm-up from 0 to lr over warmup_steps, then cosine decay to 0 at ``steps``."""
    return optax.warmup_cosine_decay_schedule(0.0, t.lr, t.warmup_steps, t.steps, end_value=0.0)


def make_optimizer(t: TrainSection, params: Any) -> optax.GradientTransformation:
    """AdamW with decay masked to ndim >= 2 weights (models.weight_decay_mask), optional clipping."""
    adamw = optax.adamw(lr_schedule(t), b1=t.beta1, b2=t.beta2, eps=t.eps, weight_decay=t.weight_decay,
                        mask=models.weight_decay_mask(params))
    return optax.chain(optax.clip_by_global_norm(t.grad_clip_norm), adamw) if t.grad_clip_norm else adamw


def init_state(model: models.CLIP, tx: optax.GradientTransformation, rng: jax.Array) -> dict:
    """{'step': int32 scalar, 'params', 'batch_stats' ({} for ViTs), 'opt_state'}."""
    variables = models.init_variables(model, rng)
    params = variables["params"]
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "batch_stats": variables.get("batch_stats", {}), "opt_state": tx.init(params)}


def make_train_step(model: models.CLIP, tx: optax.GradientTransformation, loss_name: str,
                    schedule: optax.Schedule):
    """state, images uint8 (B,S,S,3), tokens int32 (B,L) -> (state, metrics); not yet jitted."""
    has_bn = model.config.vision.kind == "resnet"

    def loss_fn(params, batch_stats, images, tokens):
        x = models.preprocess(images, model.dtype)
        variables = {"params": params, "batch_stats": batch_stats} if has_bn else {"params": params}
        if has_bn:
            (emb_i, emb_t, scale), updates = model.apply(variables, x, tokens, train=True,
                                                         mutable=["batch_stats"])
            batch_stats = updates["batch_stats"]
        else:
            emb_i, emb_t, scale = model.apply(variables, x, tokens, train=True)
        if loss_name == "infonce":
            loss = infonce_loss(emb_i, emb_t, scale)
        else:
            loss = linear_contrastive_loss(emb_i, emb_t)
        return loss, (scale, batch_stats)

    def step(state, images, tokens):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (scale, batch_stats)), grads = grad_fn(state["params"], state["batch_stats"], images, tokens)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {"loss": loss, "logit_scale": scale, "lr": schedule(state["step"]),
                   "grad_norm": optax.tree.norm(grads)}
        new_state = {"step": state["step"] + 1, "params": params, "batch_stats": batch_stats,
                     "opt_state": opt_state}
        return new_state, metrics

    return step


def make_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("data",))


def jit_train_step(step_fn, mesh: Mesh):
    """jit with the state replicated and donated, the batch sharded along 'data'."""
    rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(step_fn, in_shardings=(rep, shard, shard), out_shardings=(rep, rep), donate_argnums=0)


def to_global(mesh: Mesh, array: np.ndarray) -> jax.Array:
    """A process-local batch share -> the global array sharded along 'data'."""
    return jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), array)


# ----------------------------------------------------------------------------------------------
# Checkpoints and metrics
# ----------------------------------------------------------------------------------------------
def checkpoint_manager(workdir: Path, t: TrainSection) -> ocp.CheckpointManager:
    """Orbax manager over WORKDIR/checkpoints: keeps the 2 newest, plus every keep_every-th step."""
    options = ocp.CheckpointManagerOptions(max_to_keep=2, keep_period=t.keep_every or None,
                                           save_interval_steps=1, create=True)
    return ocp.CheckpointManager(workdir.resolve() / "checkpoints", options=options)


def restore_state(manager: ocp.CheckpointManager, abstract_state: dict, step: int | None = None) -> dict:
    step = manager.latest_step() if step is None else step
    return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temporary sibling, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(x):
    if isinstance(x, (np.generic, jax.Array)):
        return np.asarray(x).item()
    if isinstance(x, (np.ndarray,)):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a kill
            break
    return records


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only the records with step <= ``step`` (atomic rewrite): the resumed run re-logs the rest."""
    records = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


def append_metrics(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, default=_json_default) + "\n")
        f.flush()


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------
class NonFiniteLossError(RuntimeError):
    pass


def _run_metadata(cfg: TrainConfig, model_cfg: models.CLIPConfig, data: TrainData, dtype) -> dict:
    return {"config": cfg.to_dict(), "model_config": models.config_to_dict(model_cfg), "eot_id": data.eot_id,
            "compute_dtype": jnp.dtype(dtype).name, "version": mmcl_theory.__version__,
            "devices": [str(d) for d in jax.devices()], "process_count": jax.process_count()}


def train(cfg: TrainConfig, workdir: str | os.PathLike, *, progress: bool = True,
          data: TrainData | None = None) -> dict:
    """Run (or resume) training in ``workdir``. Returns {'step', 'last_metrics'}.

    Writes WORKDIR/run.json (config, model config, version), metrics.jsonl, checkpoints/ and, with
    periodic evaluation, eval/*.json. Raises NonFiniteLossError on a NaN/inf loss (no save after it).
    """
    from tqdm import tqdm

    if cfg.distributed.enabled:
        kwargs = {k: v for k, v in (("coordinator_address", cfg.distributed.coordinator_address or None),
                                    ("num_processes", cfg.distributed.num_processes),
                                    ("process_id", cfg.distributed.process_id)) if v not in (None, -1)}
        jax.distributed.initialize(**kwargs)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t = cfg.train
    mesh = make_mesh()
    if t.batch_size % mesh.size:
        raise ValueError(f"train.batch_size = {t.batch_size}: must be a multiple of the {mesh.size} devices")
    data = build_train_data(cfg, workdir) if data is None else data
    model_cfg = models.model_config(cfg.model.name, vocab_size=data.vocab_size,
                                    context_length=data.tokens.shape[-1],
                                    image_size=data.images.shape[1])
    dtype = compute_dtype(cfg.model.dtype)
    model = models.create_model(model_cfg, data.eot_id, dtype)
    is_main = jax.process_index() == 0
    if is_main:
        write_json_atomic(workdir / "run.json", _run_metadata(cfg, model_cfg, data, dtype))

    # State: built directly replicated; restored from the latest checkpoint when there is one.
    rng = jax.random.key(t.seed)
    abstract_params = jax.eval_shape(lambda r: models.init_variables(model, r), rng)["params"]
    tx = make_optimizer(t, abstract_params)
    rep = NamedSharding(mesh, P())
    state = jax.jit(lambda r: init_state(model, tx, r), out_shardings=rep)(rng)
    manager = checkpoint_manager(workdir, t)
    metrics_path = workdir / "metrics.jsonl"
    start = 0
    if manager.latest_step() is not None:
        state = restore_state(manager, jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state))
        start = int(state["step"])
        if is_main:
            print(f"resuming from step {start} in {workdir}", file=sys.stderr)
    if is_main and metrics_path.exists():
        truncate_metrics(metrics_path, start)

    step_fn = jit_train_step(make_train_step(model, tx, t.loss, lr_schedule(t)), mesh)
    evaluator = None
    if cfg.eval.every:
        from mmcl_theory.clip import evaluate

        evaluator = evaluate.PeriodicEvaluator(cfg, model, workdir)

    prefetch = Prefetcher(lambda s: host_batch(data, t.seed, s, t.batch_size), start, t.steps)
    finite = jnp.array(True)
    last: dict = {}
    bar = tqdm(total=t.steps, initial=start, disable=not (progress and is_main), dynamic_ncols=True,
               unit="step")
    tick, tick_step = time.perf_counter(), start
    try:
        for _ in range(start, t.steps):
            s, (images, tokens) = prefetch.get()
            state, metrics = step_fn(state, to_global(mesh, images), to_global(mesh, tokens))
            finite = jnp.logical_and(finite, jnp.isfinite(metrics["loss"]))
            done = s + 1
            save = done % t.checkpoint_every == 0 or done == t.steps
            if done % t.log_every == 0 or save or done == t.steps:
                if not bool(finite):
                    raise NonFiniteLossError(
                        f"loss is not finite (NaN/inf) by step {done} (last value {float(metrics['loss'])}); "
                        f"stopped without saving. Last good checkpoint: step {manager.latest_step()} in "
                        f"{workdir / 'checkpoints'}. Lower train.lr or add train.grad_clip_norm.")
                now = time.perf_counter()
                last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                last.update(step=done, temperature=1.0 / last["logit_scale"],
                            samples_per_s=(done - tick_step) * t.batch_size / max(now - tick, 1e-9))
                tick, tick_step = now, done
                if is_main:
                    append_metrics(metrics_path, last)
                bar.set_postfix(loss=f"{last['loss']:.4f}", T=f"{last['temperature']:.4f}",
                                lr=f"{last['lr']:.2e}", sps=f"{last['samples_per_s']:.0f}")
            if save:
                manager.save(done, args=ocp.args.StandardSave(state))
            if evaluator is not None and (done % cfg.eval.every == 0 or done == t.steps):
                record = evaluator(state, done)
                if is_main:
                    append_metrics(metrics_path, {"step": done, "eval": record})
            bar.update(1)
    finally:
        bar.close()
        manager.wait_until_finished()
        manager.close()
    return {"step": int(state["step"]), "last_metrics": last}


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmcl_theory.clip.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="TOML run config (see real_data/)")
    parser.add_argument("--workdir", required=True, help="output folder; an existing run there is resumed")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config value (TOML syntax), e.g. --set train.steps=100")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        result = train(cfg, args.workdir, progress=not args.no_progress)
    except (ValueError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    print(json.dumps(result["last_metrics"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
