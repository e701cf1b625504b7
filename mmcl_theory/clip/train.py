"""Train a CLIP from scratch: ``python -m mmcl_theory.clip.train --config real_data/NAME.toml --workdir DIR``.

The loop and its CLI (big_vision style: one readable trainer). The pieces it drives live below it:
``clip.config`` (the TOML schema), ``clip.train_data`` (pairs and the batch of each step),
``clip.state`` (optimiser, initial state, mesh, checkpoints) and ``clip.zero_shot`` (the periodic
evaluator, handed the model's variables).

- Objective: train.objective, built by ``clip.objectives.step_objective`` (CLIP, the supervised
  baseline, SLIP, FILIP, DeCLIP, DeFILIP); it runs the forward passes it needs inside one model.apply.
- The step is jitted with its state donated, the batch sharded over all devices (mesh axis 'data'),
  the state replicated; bf16 compute on GPU, float32 on CPU (model.dtype = 'auto').
- Resume: the newest readable checkpoint in WORKDIR/checkpoints is restored (an unreadable newer
  one is reported in one line and moved to WORKDIR/checkpoints_unreadable) and metrics.jsonl is cut
  back to it, so a kill -9 loses no steps and the resumed run matches an uninterrupted one.
- A non-finite loss or gradient norm stops the run before the next save: the last good checkpoint stays.
- Bad input (config, workdir, data layout) is one line on stderr and exit code 2; unreadable training
  images are dropped, counted and listed (stderr, run.json 'data', the final summary line).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from mmcl_theory.clip import models, objectives, state as st
from mmcl_theory.clip.config import TrainConfig, load_config, portable_dict
from mmcl_theory.clip.train_data import Prefetcher, TrainData, host_batch, load_train_data
from mmcl_theory.clip.zero_shot import PeriodicEvaluator, check_datasets
from mmcl_theory.config import ArgumentParser, ConfigError
from mmcl_theory.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl, run_header, to_json
from mmcl_theory.runtime import error_exit


# ----------------------------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------------------------
def make_train_step(model: models.CLIP, tx: optax.GradientTransformation, objective: objectives.StepObjective,
                    schedule: optax.Schedule, seed: int = 0):
    """step(state, batch) -> (state, metrics), not yet jitted.

    batch: {'images': uint8 (B, S, S, 3), 'tokens': int32 (B, L)[, 'labels']}. One AdamW update of
    the objective's loss (objectives.StepObjective; its PRNG key is fold_in(key(seed), step), so a
    resumed run draws the same augmentations); ResNets also update their batch-norm statistics, and
    state['objective'] (the DeCLIP queue) is carried. metrics: float32 scalars {'loss',
    'logit_scale', 'lr' (of this step), 'grad_norm' (global L2 norm of the gradient)}.
    """
    has_bn = model.config.vision.kind == "resnet"

    def loss_fn(params, batch_stats, batch, objective_state, key):
        if has_bn:
            (loss, scale, objective_state), updates = model.apply(
                {"params": params, "batch_stats": batch_stats}, batch, objective_state, key, method=objective,
                mutable=["batch_stats"])
            batch_stats = updates["batch_stats"]
        else:
            loss, scale, objective_state = model.apply({"params": params}, batch, objective_state, key,
                                                       method=objective)
        return loss, (scale, batch_stats, objective_state)

    def step(state, batch):
        key = jax.random.fold_in(jax.random.key(seed), state["step"])
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (scale, batch_stats, objective_state)), grads = grad_fn(
            state["params"], state["batch_stats"], batch, state.get("objective", {}), key)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {"loss": loss, "logit_scale": scale, "lr": schedule(state["step"]),
                   "grad_norm": optax.tree.norm(grads)}
        new_state = {"step": state["step"] + 1, "params": params, "batch_stats": batch_stats,
                     "opt_state": opt_state}
        if objective_state:
            new_state["objective"] = objective_state
        return new_state, metrics

    return step


def jit_train_step(step_fn, mesh: Mesh):
    """jit with the state replicated and donated, every batch entry sharded along 'data'."""
    rep = st.replicated(mesh)
    return jax.jit(step_fn, in_shardings=(rep, st.batch_sharding(mesh)), out_shardings=(rep, rep),
                   donate_argnums=0)


# ----------------------------------------------------------------------------------------------
# Run folder
# ----------------------------------------------------------------------------------------------
class NonFiniteLossError(RuntimeError):
    """The loss or gradient norm became NaN/inf; the run stopped before saving."""


def prepare_workdir(path: str | Path) -> Path:
    """The run folder, created if new; an empty path (the working folder, unasked), a path that is a file, or one
    that cannot be created, is a ConfigError."""
    if not str(path).strip():
        raise ConfigError(f"--workdir = {str(path)!r} is not allowed: a folder path (new, or an earlier run's to resume)")
    workdir = Path(path)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir = {str(path)!r} is a file: a folder (new, or an earlier run's to resume)")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--workdir = {str(path)!r} cannot be created ({e.strerror}): a writable folder") from None
    return workdir


def cut_metrics(path: Path, records: list[dict], step: int) -> None:
    """Rewrite metrics.jsonl (atomic) with its records of step <= ``step``: a resumed run re-logs the rest."""
    kept = [r for r in records if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(to_json(r, indent=None) + "\n" for r in kept))


def _initialise_distributed(cfg: TrainConfig) -> None:
    d = cfg.distributed
    if d.enabled:
        kwargs = {k: v for k, v in (("coordinator_address", d.coordinator_address or None),
                                    ("num_processes", d.num_processes), ("process_id", d.process_id))
                  if v not in (None, -1)}
        jax.distributed.initialize(**kwargs)


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, workdir: str | Path, *, progress: bool = True, data: TrainData | None = None,
          command: Sequence[str] | None = None) -> dict:
    """Run (or resume) training in ``workdir``; returns {'step', 'last_metrics', 'data' (the data report)}.

    Writes WORKDIR/run.json (run header with the portable config, model config, EOT id, data report),
    metrics.jsonl, checkpoints/ and, with periodic evaluation, eval/*.json. ``data`` replaces the
    config's training pairs (tests). Raises ConfigError (bad input), CorruptFileError (unreadable
    run state) or NonFiniteLossError.
    """
    from tqdm import tqdm

    _initialise_distributed(cfg)
    workdir = prepare_workdir(workdir)
    t = cfg.train
    mesh = st.make_mesh()
    if t.batch_size % mesh.size:
        raise ConfigError(f"train.batch_size = {t.batch_size} is not allowed: a multiple of the {mesh.size} devices")
    is_main = jax.process_index() == 0
    metrics_path = workdir / "metrics.jsonl"
    logged = read_jsonl(metrics_path) if is_main else []  # a corrupt file stops the run before any work
    if cfg.eval.every:
        check_datasets(cfg.eval.datasets, cfg.eval.root, cfg.eval.roots)
    data = load_train_data(cfg, workdir, progress) if data is None else data
    if t.batch_size > data.num_examples:
        raise ConfigError(f"train.batch_size = {t.batch_size} is not allowed: at most the number of training "
                          f"examples ({data.num_examples})")
    model_cfg = models.model_config(cfg.model.name, vocab_size=data.vocab_size,
                                    context_length=data.tokens.shape[-1], image_size=data.image_size,
                                    text_layers=cfg.model.text_layers or None)
    dtype = st.compute_dtype(cfg.model.dtype)
    options = objectives.model_options(t.objective_spec, len(data.classes["classnames"]) if data.classes else 0, t.ssl_dim)
    model = models.create_model(model_cfg, data.eot_id, dtype, **options)
    objective_state = objectives.initial_objective_state(t.objective_spec, t.queue_size, model_cfg.embed_dim)
    header = run_header(portable_dict(cfg), command)
    run = dict(header, model_config=models.config_to_dict(model_cfg), eot_id=data.eot_id,
               compute_dtype=jnp.dtype(dtype).name, devices=[str(d) for d in jax.devices()],
               process_count=jax.process_count(), data=data.report)
    if options:
        run.update(model_options=options)
    if data.classes:
        run.update(classes=data.classes)
    if is_main:
        atomic_write_json(workdir / st.RUN_FILE, run)

    # State: restored from the newest readable checkpoint, else built directly replicated.
    abstract_params = jax.eval_shape(lambda r: models.init_variables(model, r), jax.random.key(0))["params"]
    tx = st.make_optimizer(t, abstract_params)
    manager, state, unreadable = st.restore_latest_readable(workdir, t.keep_every,
                                                            st.abstract_state(model, tx, mesh, objective_state))
    if state is None:
        state = jax.jit(lambda r: st.init_state(model, tx, r, objective_state),
                        out_shardings=st.replicated(mesh))(jax.random.key(t.seed))
    start = int(state["step"])
    if is_main and unreadable:
        print(f"checkpoint(s) {', '.join(f'step {s} ({r})' for s, r in unreadable)} in {workdir / st.CHECKPOINTS} "
              f"cannot be read: moved to {workdir / st.QUARANTINE}; resuming from step {start}", file=sys.stderr)
    elif is_main and start:
        print(f"resuming from step {start} in {workdir}", file=sys.stderr)
    if is_main and metrics_path.exists():
        cut_metrics(metrics_path, logged, start)

    objective = objectives.step_objective(
        t.objective_spec, contrastive_loss=t.loss, label_kind=data.classes["kind"] if data.classes else "softmax",
        ssl_weight=t.ssl_weight, ssl_temperature=t.ssl_temperature, nn_weight=t.nn_weight)
    step_fn = jit_train_step(make_train_step(model, tx, objective, st.lr_schedule(t), t.seed), mesh)
    evaluator = None
    if cfg.eval.every:
        from mmcl_theory.clip import data as data_layer

        tokenizer = data_layer.load_tokenizer(workdir / st.TOKENIZER_FILE)
        evaluator = PeriodicEvaluator(cfg.eval, model, tokenizer, workdir, run, header)

    prefetch = Prefetcher(lambda s: host_batch(data, t.seed, s, t.batch_size), start, t.steps)
    finite = jnp.array(True)
    last: dict = {}
    bar = tqdm(total=t.steps, initial=start, disable=not (progress and is_main), dynamic_ncols=True, unit="step")
    tick, tick_step = time.perf_counter(), start
    try:
        for _ in range(start, t.steps):
            s, batch = prefetch.get()
            state, metrics = step_fn(state, {k: st.to_global(mesh, v) for k, v in batch.items()})
            finite = finite & jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
            done = s + 1
            save = done % t.checkpoint_every == 0 or done == t.steps
            if done % t.log_every == 0 or save:
                if not bool(finite):
                    raise NonFiniteLossError(
                        f"loss or gradient norm is not finite (NaN/inf) by step {done} (last loss "
                        f"{float(metrics['loss'])}); stopped without saving. Last good checkpoint: step "
                        f"{manager.latest_step()} in {workdir / st.CHECKPOINTS}. Lower train.lr or add "
                        "train.grad_clip_norm.")
                now = time.perf_counter()
                last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                last.update(step=done, temperature=1.0 / last["logit_scale"],
                            samples_per_s=(done - tick_step) * t.batch_size / max(now - tick, 1e-9))
                tick, tick_step = now, done
                if is_main:
                    append_jsonl(metrics_path, last)
                bar.set_postfix(loss=f"{last['loss']:.4f}", T=f"{last['temperature']:.4f}",
                                lr=f"{last['lr']:.2e}", sps=f"{last['samples_per_s']:.0f}")
            if save:
                manager.save(done, args=ocp.args.StandardSave(state))
            if evaluator is not None and (done % cfg.eval.every == 0 or done == t.steps):
                record = evaluator(st.variables_of(state), done)
                if is_main:
                    append_jsonl(metrics_path, {"step": done, "eval": record})
            bar.update(1)
    finally:
        bar.close()
        manager.wait_until_finished()
        manager.close()
    return {"step": int(state["step"]), "last_metrics": last, "data": data.report}


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
PROG = "python -m mmcl_theory.clip.train"


def main(argv: list[str] | None = None) -> int:
    """CLI: 0 done; 2 bad input (one line on stderr); 1 non-finite loss. Last stdout line (process 0 only): a
    JSON summary (final metrics, 'unreadable_images' dropped and 'skipped_at_load' records)."""
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="TOML run config (see real_data/)")
    parser.add_argument("--workdir", required=True, help="output folder; an earlier run there is resumed")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config value, parsed by the field's type, e.g. --set train.steps=100")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        result = train(cfg, args.workdir, progress=not args.no_progress, command=[PROG, *argv])
    except (ValueError, OSError) as e:  # ConfigError, CorruptFileError, DataLayoutError are ValueErrors
        return error_exit(e)
    except NonFiniteLossError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 1
    if jax.process_index():
        return 0  # one summary per run: process 0's
    report = result["data"]
    print(to_json(dict(result["last_metrics"], unreadable_images=report["unreadable"]["count"],
                       skipped_at_load=report["skipped_at_load"]["count"]), indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
