"""The training state of a CLIP run and where it lives: optimiser, initialisation, device mesh, checkpoints.

State: a dict pytree ``{'step': int32 (), 'params', 'batch_stats', 'opt_state'}`` (``batch_stats``
is ``{}`` for ViTs), plus ``'objective'`` for objectives with state of their own (the DeCLIP text
queue, clip.objectives.initial_objective_state). Optimiser: AdamW with decoupled weight decay on the weights with ndim >= 2
(not norms, biases, class token, temperature), after an optional global-norm clip; the learning
rate warms up linearly from 0 and then follows a cosine to 0:

    lr(s) = lr * s / W                                     for s < W (W = warmup_steps)
    lr(s) = lr * (1 + cos(pi * (s - W) / (S - W))) / 2     for W <= s <= S (S = steps)

Mesh: all devices on one axis 'data'; the state is replicated, a batch is sharded along 'data'.

A run folder (WORKDIR) holds ``run.json`` (provenance, model config, EOT id), ``tokenizer.json``
(real data), ``checkpoints/<step>/`` (orbax, written to a temporary folder and renamed, so a
killed save leaves no half checkpoint under a step name) and ``metrics.jsonl``. Restoring the
model's variables for evaluation reads ``params`` and ``batch_stats`` only: no optimiser is built.
A checkpoint that cannot be read is reported and the run falls back to the newest one that can.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmcl_theory.clip import models
from mmcl_theory.clip.config import TrainSection
from mmcl_theory.io import CorruptFileError

RUN_FILE = "run.json"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINTS = "checkpoints"
QUARANTINE = "checkpoints_unreadable"


# ----------------------------------------------------------------------------------------------
# Optimiser and initial state
# ----------------------------------------------------------------------------------------------
def compute_dtype(name: str) -> jnp.dtype:
    """'auto' -> bfloat16 on GPU, float32 elsewhere; 'float32' / 'bfloat16' as named."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() == "gpu" else jnp.float32
    return jnp.dtype(name)


def lr_schedule(t: TrainSection) -> optax.Schedule:
    """step (int) -> learning rate (float32): linear warm-up to t.lr, cosine to 0 at t.steps (module doc)."""
    return optax.warmup_cosine_decay_schedule(0.0, t.lr, t.warmup_steps, t.steps, end_value=0.0)


def make_optimizer(t: TrainSection, params: Any) -> optax.GradientTransformation:
    """AdamW(b1, b2, eps, weight_decay) with decay masked to ndim >= 2 leaves (models.weight_decay_mask)
    and lr_schedule(t); preceded by clip_by_global_norm(t.grad_clip_norm) when that is > 0.
    ``params`` may be abstract (jax.ShapeDtypeStruct leaves): only its structure and ranks are used."""
    adamw = optax.adamw(lr_schedule(t), b1=t.beta1, b2=t.beta2, eps=t.eps, weight_decay=t.weight_decay,
                        mask=models.weight_decay_mask(params))
    return optax.chain(optax.clip_by_global_norm(t.grad_clip_norm), adamw) if t.grad_clip_norm else adamw


def init_state(model: models.CLIP, tx: optax.GradientTransformation, rng: jax.Array,
               objective_state: dict | None = None) -> dict:
    """The state at step 0: {'step': int32 0, 'params', 'batch_stats' ({} for ViTs), 'opt_state': tx.init}
    and, when ``objective_state`` is non-empty, 'objective': objective_state."""
    variables = models.init_variables(model, rng)
    params = variables["params"]
    state = {"step": jnp.zeros((), jnp.int32), "params": params,
             "batch_stats": variables.get("batch_stats", {}), "opt_state": tx.init(params)}
    if objective_state:
        state["objective"] = objective_state
    return state


def variables_of(state: dict) -> dict:
    """The model variables inside a state (or a restored subset): {'params'[, 'batch_stats']}."""
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    return variables


# ----------------------------------------------------------------------------------------------
# Devices
# ----------------------------------------------------------------------------------------------
def make_mesh() -> Mesh:
    """All devices (of every process) on one mesh axis 'data'."""
    return Mesh(np.array(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of the state: a full copy on every device."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of a batch: leading (batch) axis split along 'data'."""
    return NamedSharding(mesh, P("data"))


def to_global(mesh: Mesh, array: np.ndarray) -> jax.Array:
    """This process's share of a batch, (B / processes, ...) -> the global (B, ...) array sharded along 'data'."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh), array)


def abstract_state(model: models.CLIP, tx: optax.GradientTransformation, mesh: Mesh,
                   objective_state: dict | None = None) -> dict:
    """Shapes, dtypes and (replicated) shardings of init_state's output, computed without allocating it."""
    rep = replicated(mesh)
    shapes = jax.eval_shape(lambda r: init_state(model, tx, r, objective_state), jax.random.key(0))
    return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def checkpoint_manager(workdir: Path, keep_every: int = 0) -> ocp.CheckpointManager:
    """Orbax manager over WORKDIR/checkpoints: keeps the 2 newest, plus every keep_every-th step (> 0)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=2, keep_period=keep_every or None,
                                           save_interval_steps=1, create=True)
    return ocp.CheckpointManager(Path(workdir).resolve() / CHECKPOINTS, options=options)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


class _AbandonedReadTask(logging.Filter):
    """Drops asyncio's '... exception was never retrieved' records of failed checkpoint reads (orbax's
    'Encountered error while reading array index', tensorstore's 'Error reading ...'); keeps the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "exception was never retrieved" not in record.getMessage() or not record.exc_info:
            return True
        text = str(record.exc_info[1])
        return not ("error while reading array index" in text or "Error reading" in text)


def _quiet_abandoned_readers() -> None:
    """Keep the async readers that a failed restore abandons from printing tracebacks (called before restoring).

    When one array of a checkpoint cannot be read, orbax stops its event loop with the other reads
    still in flight. Their remains surface later, some even before the restore's exception reaches
    us, as tracebacks on stderr beside the run's own one-line report: coroutines
    ``_read_array_index_and_device_put`` closed at garbage collection (GeneratorExit, or a
    RuntimeWarning that one was never awaited when it had not started) and tensorstore
    completions calling into the closed loop ('Event loop is closed'), both through
    sys.unraisablehook, and sibling reads (tasks, gathers, tensorstore futures) whose failures asyncio
    logs as never retrieved. This drops exactly those; every other unraisable exception goes to the
    previous hook, and every other warning and asyncio log record is kept.
    """
    warnings.filterwarnings("ignore", message="coroutine '_read_array_index_and_device_put' was never awaited",
                            category=RuntimeWarning)
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _AbandonedReadTask) for f in asyncio_log.filters):
        asyncio_log.addFilter(_AbandonedReadTask())
    previous = sys.unraisablehook
    if getattr(previous, "quiets_orbax_readers", False):
        return

    def hook(unraisable):
        reader = getattr(getattr(unraisable.object, "cr_code", None), "co_name", "") == "_read_array_index_and_device_put"
        closed_loop = (unraisable.object is None and isinstance(unraisable.exc_value, RuntimeError)
                       and str(unraisable.exc_value) == "Event loop is closed")
        if not (reader or closed_loop):
            previous(unraisable)

    hook.quiets_orbax_readers = True
    sys.unraisablehook = hook


def restore_latest_readable(workdir: Path, keep_every: int, abstract: dict,
                            ) -> tuple[ocp.CheckpointManager, dict | None, list[tuple[int, str]]]:
    """Restore the newest checkpoint of WORKDIR that can be read into ``abstract`` (its shapes and shardings).

    Returns (manager, state or None when there is no checkpoint, [(step, reason)] of newer checkpoints
    that could not be read). Those are moved to WORKDIR/checkpoints_unreadable/<step> so the resumed
    run can save its own step under that name again. When checkpoints exist but none can be read
    (all corrupt, or written by a different model config), nothing is moved and CorruptFileError says so.
    """
    _quiet_abandoned_readers()
    manager = checkpoint_manager(workdir, keep_every)
    unreadable: list[tuple[int, str]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # orbax/tensorstore raise many types for a damaged folder
            unreadable.append((step, _one_line(e)))
            continue
        if unreadable:
            manager.close()
            quarantine = Path(workdir).resolve() / QUARANTINE
            quarantine.mkdir(exist_ok=True)
            for bad, _ in unreadable:
                target = quarantine / str(bad)
                if target.exists():
                    shutil.rmtree(target)
                shutil.move(str(Path(workdir).resolve() / CHECKPOINTS / str(bad)), target)
            manager = checkpoint_manager(workdir, keep_every)
        return manager, state, unreadable
    if unreadable:
        manager.close()
        details = "; ".join(f"step {s}: {r}" for s, r in unreadable)
        raise CorruptFileError(f"{Path(workdir) / CHECKPOINTS}: no checkpoint can be restored ({details}); were they "
                               "written with another model config? Use a new --workdir or move them away")
    return manager, None, []


def checkpoint_steps(workdir: Path) -> list[int]:
    """The steps with a checkpoint in WORKDIR/checkpoints, ascending ([] when none)."""
    folder = Path(workdir).resolve() / CHECKPOINTS
    if not folder.is_dir():
        return []
    manager = ocp.CheckpointManager(folder)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def restore_variables(workdir: Path, model: models.CLIP, step: int) -> dict:
    """{'params'[, 'batch_stats']} of checkpoint ``step``, replicated over the current devices
    (whatever topology saved it). Reads only those two entries of the saved state: no optimiser."""
    rep = replicated(make_mesh())
    shapes = jax.eval_shape(lambda r: models.init_variables(model, r), jax.random.key(0))
    wanted = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}
    wanted = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), wanted)
    _quiet_abandoned_readers()
    manager = ocp.CheckpointManager(Path(workdir).resolve() / CHECKPOINTS, item_handlers=ocp.PyTreeCheckpointHandler())
    try:
        restored = manager.restore(step, args=ocp.args.PyTreeRestore(
            wanted, restore_args=ocp.checkpoint_utils.construct_restore_args(wanted), partial_restore=True))
    except Exception as e:
        raise CorruptFileError(f"{Path(workdir) / CHECKPOINTS / str(step)}: cannot be restored ({_one_line(e)})") from None
    finally:
        manager.close()
    return variables_of(restored)


# ----------------------------------------------------------------------------------------------
# The run's description
# ----------------------------------------------------------------------------------------------
def load_run(workdir: Path) -> dict:
    """WORKDIR/run.json as written by training (provenance, 'model_config', 'eot_id', 'data')."""
    path = Path(workdir) / RUN_FILE
    if not path.is_file():
        raise CorruptFileError(f"--workdir = {str(workdir)!r}: no {RUN_FILE} (not a training run folder)")
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in ("model_config", "eot_id", "config") if k not in run]
    if missing:
        raise CorruptFileError(f"{path}: missing {', '.join(missing)} (written by another version?)")
    return run


def model_from_run(run: dict, dtype=jnp.float32) -> models.CLIP:
    """The CLIP module described by a run.json (evaluation runs it in float32 by default), with the
    optional parts its objective trained ('model_options': a classification head, a SimCLR MLP)."""
    mc = run["model_config"]
    cfg = models.CLIPConfig(name=mc["name"], embed_dim=mc["embed_dim"], vision=models.VisionConfig(**mc["vision"]),
                            text=models.TextConfig(**mc["text"]))
    return models.create_model(cfg, run["eot_id"], dtype, **run.get("model_options", {}))
