"""Why a paper_mnist training run diverges: the logits, embedding norms and loss step by step.

Replays one seed of one point of the sweep paper_mnist exactly as paper_mnist.train runs it (the same
key, data, initialisation, batch order and compiled step) for a few epochs, and prints per epoch the
mean and largest minibatch loss, the largest |logit| |<f_I(x_i), f_T(t_j)>| / tau of a minibatch, the
largest image and text embedding norms, and the global gradient norm; then the steps around the first
non-finite loss. The CLIP loss here has no normalisation (docs/models.md#paper-mnist), so nothing
bounds the logits but the optimiser.

    python bench/paper_mnist_divergence.py --pi-core 1 --pi-spu 0 --seed 1 --epochs 7
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmcl_theory import paper_mnist as pm
from mmcl_theory.config import ArgumentParser, option_type
from mmcl_theory.learners import ZERO_SHOT


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pi-core", type=option_type("--pi-core", float, 0, 1), default=1.0)
    parser.add_argument("--pi-spu", type=option_type("--pi-spu", float, 0, 1), default=0.0)
    parser.add_argument("--seed", type=option_type("--seed", int, 0, 2**31 - 1), default=1)
    parser.add_argument("--epochs", type=option_type("--epochs", int, 1, 10**4), default=7)
    args = parser.parse_args()
    config = pm.PaperMnistConfig(pi_core=args.pi_core, pi_spu=args.pi_spu)
    settings = pm.PaperMnistSettings()
    data = pm.build_data(config, args.seed)
    k_init, k_shuffle = jax.random.split(jax.random.key(args.seed))  # as train() given learner.fit's key
    params = pm.init_params(k_init, ZERO_SHOT, data.captions.shape[1], settings)
    opt_state = pm.optimiser(settings).init(params)
    step = pm.compiled_step(ZERO_SHOT, settings, config.shade_rgb, config.composite)
    rgb = jnp.asarray(pm.SHADE_RGBS[config.shade_rgb])
    grey, shades, captions = jnp.asarray(data.grey), jnp.asarray(data.shades), jnp.asarray(data.captions)

    @jax.jit
    def probe(params, rows):
        images = pm.composite(grey[rows], rgb[shades[rows]], config.composite)
        emb_i = pm.lenet(params["image"], images)
        emb_t = pm.text_encoder(params["text"], captions[rows])
        logits = pm.logit_scale(params, settings) * emb_i @ emb_t.T
        grads = jax.grad(lambda p: pm.clip_loss(p, images, captions[rows], settings))(params)
        return (jnp.max(jnp.abs(logits)), jnp.max(jnp.linalg.norm(emb_i, axis=1)),
                jnp.max(jnp.linalg.norm(emb_t, axis=1)), optax.global_norm(grads))

    print(f"paper_mnist pi_core {args.pi_core:g}, pi_spu {args.pi_spu:g}, seed {args.seed}: "
          f"lr {settings.lr}, momentum {settings.momentum}, weight decay {settings.weight_decay}, tau {settings.temperature}")
    print(f"{'epoch':>5} {'mean loss':>10} {'max loss':>10} {'max |logit|':>12} {'max |f_I|':>10} {'max |f_T|':>10} "
          f"{'max |grad|':>11} {'s':>5}")
    history = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        losses, probes = [], []
        for t, rows in enumerate(pm.epoch_batches(jax.random.fold_in(k_shuffle, epoch), data.grey.shape[0],
                                                  settings.batch_size)):
            probes.append([float(v) for v in probe(params, rows)])
            params, opt_state, loss = step(params, opt_state, grey, shades, captions, rows)
            losses.append(float(loss))
            history.append((epoch + 1, t, float(loss), *probes[-1]))
            if not np.isfinite(loss):
                break
        p = np.array(probes)
        print(f"{epoch + 1:>5} {np.mean(losses):>10.4g} {np.max(losses):>10.4g} {p[:, 0].max():>12.4g} "
              f"{p[:, 1].max():>10.4g} {p[:, 2].max():>10.4g} {p[:, 3].max():>11.4g} {time.perf_counter() - start:>5.0f}")
        if not np.isfinite(losses[-1]):
            print("\nthe steps before the first non-finite loss (before each step: its loss is computed at these "
                  "parameters):")
            print(f"{'epoch':>5} {'step':>5} {'loss':>10} {'|logit|':>10} {'|f_I|':>10} {'|f_T|':>10} {'|grad|':>10}")
            for row in history[-8:]:
                print(f"{row[0]:>5} {row[1]:>5} {row[2]:>10.4g} {row[3]:>10.4g} {row[4]:>10.4g} {row[5]:>10.4g} "
                      f"{row[6]:>10.4g}")
            return
    print(f"\nno non-finite loss in {args.epochs} epochs")


if __name__ == "__main__":
    main()
