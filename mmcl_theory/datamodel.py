"""Synthetic image-text data: latent features, caption annotation, train and shifted test distributions.

docs/models.md#observation-model. A latent vector z in R^l (class cores, spurious features, details) is observed as
    image  x_I = D_I z_I + xi_I,    caption  x_T = D_T z_T + xi_T,
with D (d x l) orthonormal columns drawn from a seed and xi ~ N(0, sigma_xi^2 / d I_d), independent
across modalities and samples. A caption *annotates* a coordinate (copies its per-image value),
mentions it at its class-level value, or leaves it out (zero).

Presets (docs/models.md#m1, #m2, #paper-data-models):
- M1: binary, intra-class contrasting.  z = [z_core, z_spu].
- M2: K classes, inter-class feature sharing.  z = [c (K cores), s (K spurious)].
- DM2: the paper's Data Model 2 (Xue et al. 2024, Def. 4.6 with the masking of Def. 5.3): 2m classes
  (k, c), z in {+-1, +-beta}^m x {+-alpha, +-beta alpha}^m, captions psi * z.
The paper's Data Model 1 with the masking of Def. 5.1 is M1 itself (r = pi_core,
spurious_detail = pi_spu); NAMED_SETTINGS["DM1"] fixes it in the regime of the paper's Assumption 4.2.

Three detail types are annotated independently (docs/models.md#detail-types):
(a) per-image variation of the class core, probability `r` (caption richness);
(b) other classes' cores present in an image, probability `annotate` (M2 only);
(c) the spurious/background feature, probability `spurious_annotation`.

Labels are class indices 0..K-1 (M1: index 1 is y = +1). Test distributions keep the class-core
relation and change the class-spurious agreement q: aligned (q = 1), independent (q = 1/K),
flipped (q = 0), or any q in [0, 1]. In M2 the shifted test has no details (beta_test = 0).
Sampling is a pure function of a PRNG key; configs are frozen dataclasses that validate themselves
and are JAX pytrees (float fields are leaves, so configs can be stacked and vmapped).

Each config class is its model's one definition, and the only way to it: sample_latents, prompt_latents,
test_groups here and theory.py dispatch on what the class states, never on its type:
- `model`: the preset name (the key of PRESETS and of theory.py's per-model formulas);
- `latents(key, n, test)`: the sampler of the training distribution (test=None) and of every test distribution;
- `prompts(kind)`: the zero-shot prompt latents;
- `test_groups(test, xp)`: a test distribution as a Gaussian mixture of `num_test_groups` groups (DM2's test
  latents are discrete: no groups, ValueError);
- `test_scale`: the largest spread of a test-latent coordinate about its group mean (theory's tie tolerance).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .config import as_floats, check_range
from .results import TESTS  # noqa: F401  (the test distributions, re-exported with the models)



# Largest allowed scale (sigma_core, sigma_spu, sigma_xi, alpha), in units of the class separation 1: the learners
# train in float32, whose squares overflow above ~1.8e19 (1e100 trained to inf and scored 0.5 everywhere; 1e200
# overflowed in Python); at 1e6 the signal is a millionth of the noise, far past any regime of the paper.
SCALE_MAX = 1e6


def _pytree(meta: tuple[str, ...]):
    """Freeze a dataclass and register it as a pytree with `meta` as static fields."""

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True)(cls)
        data = tuple(f.name for f in dataclasses.fields(cls) if f.name not in meta)
        return jax.tree_util.register_dataclass(cls, data_fields=list(data), meta_fields=list(meta))

    return wrap


@_pytree(meta=("n", "d", "n_test"))
class M1Config:
    """Binary model M1 (docs/models.md#m1), with its documented defaults.

    y uniform in {-1, +1}; a = y with probability p in training; z_core = y + sigma_core e1,
    z_spu = a + sigma_spu e2. Caption: z_T,core = z_core with probability r, else y;
    z_T,spu = a + psi (z_spu - a), psi ~ Bernoulli(spurious_detail), when the spurious feature is
    mentioned (probability spurious_annotation), else 0. With r = pi_core and spurious_detail = pi_spu
    this is the paper's Data Model 1 with the feature masking of its Def. 5.1.
    """

    sigma_core: float = 1.0
    sigma_spu: float = 0.05
    p: float = 0.95
    r: float = 1.0
    spurious_annotation: float = 1.0
    spurious_detail: float = 1.0
    sigma_xi: float = 1.0
    n: int = 200
    d: int = 2000
    n_test: int = 2000

    model = "M1"
    num_classes = 2
    latent_dim = 2
    num_test_groups = 4

    def __post_init__(self):
        name = type(self).__name__
        as_floats(self, ("sigma_core", "sigma_spu", "sigma_xi", "p", "r", "spurious_annotation", "spurious_detail"))
        for f in ("sigma_core", "sigma_spu", "sigma_xi"):
            check_range(name, f, getattr(self, f), 0.0, SCALE_MAX)
        for f in ("p", "r", "spurious_annotation", "spurious_detail"):
            check_range(name, f, getattr(self, f), 0.0, 1.0)
        check_range(name, "n", self.n, 2, 10**8, integer=True)
        check_range(name, "n_test", self.n_test, 1, 10**8, integer=True)
        check_range(name, "d", self.d, self.latent_dim, 10**6, integer=True)

    @property
    def test_scale(self) -> float:
        """max(sigma_core, sigma_spu): the larger s.d. of a test latent's coordinate within its group."""
        return max(self.sigma_core, self.sigma_spu)

    def latents(self, key: jax.Array, n: int, test: str | float | None = None) -> Latents:
        """n latent pairs (class docstring), z_image = [z_core, z_spu], z_text = [z_T,core, z_T,spu] (n, 2).

        Agreement q = P(a = y): p in training (test=None), agreement(test, 2) at a test.
        """
        q = self.p if test is None else agreement(test, 2)
        k_y, k_a, k_core, k_spu, k_r, k_s = jax.random.split(key, 6)
        sign = 2.0 * jax.random.bernoulli(k_y, 0.5, (n,)) - 1.0
        a = jnp.where(jax.random.bernoulli(k_a, q, (n,)), sign, -sign)
        z_core = sign + self.sigma_core * jax.random.normal(k_core, (n,))
        z_spu = a + self.sigma_spu * jax.random.normal(k_spu, (n,))
        t_core = jnp.where(jax.random.bernoulli(k_r, self.r, (n,)), z_core, sign)
        detail = jax.random.bernoulli(jax.random.fold_in(key, 6), self.spurious_detail, (n,))
        t_spu = jnp.where(detail, z_spu, a) * jax.random.bernoulli(k_s, self.spurious_annotation, (n,))
        to_index = lambda s: ((s + 1) / 2).astype(jnp.int32)
        return Latents(jnp.stack([z_core, z_spu], 1), jnp.stack([t_core, t_spu], 1), to_index(sign), to_index(a))

    def prompts(self, kind: str) -> jax.Array:
        """(2, 2), row k for y = -1, +1: core [y, 0]; class_mean E[z_T | y] = [y, spurious_annotation (2p - 1) y]."""
        sign = jnp.array([-1.0, 1.0])
        spu = self.spurious_annotation * (2 * self.p - 1) * sign if kind == "class_mean" else 0 * sign
        return jnp.stack([sign, spu], 1)

    def test_groups(self, test: str | float, xp=jnp) -> tuple:
        """The 4 groups (y, a) in {-1, +1}^2, in the order (-1, -1), (-1, +1), (+1, +1), (+1, -1); with
        q = agreement(test, 2): weight q/2 where a = y, (1 - q)/2 where a = -y; label (y + 1)/2; mean [y, a];
        variance [sigma_core^2, sigma_spu^2] in every group (module-level test_groups: shapes, xp)."""
        q = agreement(test, 2)
        y = np.array([-1.0, -1.0, 1.0, 1.0])
        a = np.array([-1.0, 1.0, 1.0, -1.0])
        weight = 0.5 * xp.array([q, 1 - q, q, 1 - q])
        label = np.array([0, 0, 1, 1])
        mean = xp.asarray(np.stack([y, a], 1))
        var = xp.broadcast_to(xp.stack([self.sigma_core**2, self.sigma_spu**2]), (4, 2))
        return weight, label, mean, var


@_pytree(meta=("K", "n", "d", "n_test"))
class M2Config:
    """K-class model M2 (docs/models.md#m2), with the reference settings of docs/theory.md#m2-reference.

    Cores c in R^K: c_y = 1 + sigma_core e; for j != y, c_j = 1 + sigma_core e_j with probability
    beta, else 0. Spurious s in R^K: s_a = 1 + sigma_spu e, others 0; a = y with probability p,
    else uniform over the other classes. Caption: c_T,y = c_y with probability r, else 1; each
    present detail c_j is copied with probability `annotate`, else 0; s_T = s with probability
    spurious_annotation, else 0.
    """

    sigma_core: float = 1.0
    sigma_spu: float = 0.05
    p: float = 0.9
    r: float = 1.0
    beta: float = 0.2
    annotate: float = 1.0
    spurious_annotation: float = 1.0
    sigma_xi: float = 1.0
    K: int = 5
    n: int = 500
    d: int = 3000
    n_test: int = 2000

    model = "M2"

    @property
    def num_classes(self) -> int:
        return self.K

    @property
    def latent_dim(self) -> int:
        return 2 * self.K

    @property
    def num_test_groups(self) -> int:
        return self.K**2

    def __post_init__(self):
        name = type(self).__name__
        check_range(name, "K", self.K, 2, 10**4, integer=True)
        as_floats(self, ("sigma_core", "sigma_spu", "sigma_xi", "p", "r", "beta", "annotate", "spurious_annotation"))
        for f in ("sigma_core", "sigma_spu", "sigma_xi"):
            check_range(name, f, getattr(self, f), 0.0, SCALE_MAX)
        for f in ("p", "r", "beta", "annotate", "spurious_annotation"):
            check_range(name, f, getattr(self, f), 0.0, 1.0)
        check_range(name, "n", self.n, 2, 10**8, integer=True)
        check_range(name, "n_test", self.n_test, 1, 10**8, integer=True)
        check_range(name, "d", self.d, 2 * self.K, 10**6, integer=True)

    @property
    def test_scale(self) -> float:
        """max(sigma_core, sigma_spu): the larger s.d. of a test latent's coordinate within its group."""
        return max(self.sigma_core, self.sigma_spu)

    def latents(self, key: jax.Array, n: int, test: str | float | None = None) -> Latents:
        """n latent pairs (class docstring), z_image = [c, s], z_text = [c_T, s_T] (n, 2K).

        Training (test=None): agreement q = P(a = y) = p, details present with probability beta;
        a test: q = agreement(test, K) and no details (beta = 0).
        """
        q, beta = (self.p, self.beta) if test is None else (agreement(test, self.K), 0.0)
        K = self.K
        k_y, k_a, k_other, k_c, k_present, k_s, k_r, k_ann, k_sa = jax.random.split(key, 9)
        y = jax.random.randint(k_y, (n,), 0, K)
        other = (y + jax.random.randint(k_other, (n,), 1, K)) % K  # uniform over the other classes
        a = jnp.where(jax.random.bernoulli(k_a, q, (n,)), y, other)
        own = jax.nn.one_hot(y, K, dtype=bool)
        present = own | jax.random.bernoulli(k_present, beta, (n, K))
        c = (1.0 + self.sigma_core * jax.random.normal(k_c, (n, K))) * present
        s = (1.0 + self.sigma_spu * jax.random.normal(k_s, (n, 1))) * jax.nn.one_hot(a, K)
        c_text_own = jnp.where(jax.random.bernoulli(k_r, self.r, (n, K)), c, 1.0)
        c_text_detail = c * jax.random.bernoulli(k_ann, self.annotate, (n, K))
        c_text = jnp.where(own, c_text_own, c_text_detail)
        s_text = s * jax.random.bernoulli(k_sa, self.spurious_annotation, (n, 1))
        return Latents(jnp.concatenate([c, s], 1), jnp.concatenate([c_text, s_text], 1), y, a)

    def prompts(self, kind: str) -> jax.Array:
        """(K, 2K), row k: core [e_k, 0]; class_mean E[z_T | y = k] = [e_k + beta annotate (1 - e_k),
        spurious_annotation (p e_k + (1 - p)/(K - 1) (1 - e_k))] (1 the all-ones vector)."""
        K = self.K
        eye = jnp.eye(K)
        if kind == "core":
            return jnp.concatenate([eye, jnp.zeros((K, K))], 1)
        q = (1 - self.p) / (K - 1)
        cores = eye + (1 - eye) * self.beta * self.annotate
        spurious = self.spurious_annotation * (eye * self.p + (1 - eye) * q)
        return jnp.concatenate([cores, spurious], 1)

    def test_groups(self, test: str | float, xp=jnp) -> tuple:
        """The K^2 groups (y, a), y-major (group g = K y + a), with q = agreement(test, K): weight q/K where a = y,
        (1 - q)/(K (K - 1)) where a != y; label y; mean e_y + e_{K+a} (no details at test); variance sigma_core^2 at
        y, sigma_spu^2 at K + a, 0 elsewhere."""
        K = self.K
        q = agreement(test, K)
        y, a = np.divmod(np.arange(K * K), K)
        weight = xp.asarray(np.where(a == y, q, (1 - q) / (K - 1)) / K)
        eye = np.eye(K)
        mean = xp.asarray(np.concatenate([eye[y], eye[a]], 1))
        var = xp.concatenate([eye[y] * self.sigma_core**2, eye[a] * self.sigma_spu**2], 1)
        return weight, y, mean, var


@_pytree(meta=("m", "n", "d", "n_test"))
class DM2Config:
    """The paper's Data Model 2 with its caption masking (Xue et al. 2024, Def. 4.6 and 5.3; docs/models.md#dm2).

    2m classes; class index y = 2(k-1) + (0 if c = +1 else 1) stands for the paper's alias (k, c),
    k in 1..m, c in {+1, -1}. z in R^{2m}: z_k = c; z_j ~ U{-beta, +beta} for j != k (j <= m);
    z_{k+m} = c alpha in training, ~ U{-alpha, +alpha} in the true distribution P*; z_{j+m} ~
    U{-beta alpha, +beta alpha} for j != k. Caption latent psi * z with psi_k = 1 and psi_j ~
    Bernoulli(pi) for every other coordinate j. The paper's theorems assume no input noise
    (sigma_xi = 0, the default).
    """

    alpha: float = 1.2
    beta: float = 0.5
    pi: float = 1.0
    sigma_xi: float = 0.0
    m: int = 20
    n: int = 20000
    d: int = 64
    n_test: int = 20000

    model = "DM2"
    num_test_groups = 0  # discrete test latents: no Gaussian groups

    @property
    def num_classes(self) -> int:
        return 2 * self.m

    @property
    def latent_dim(self) -> int:
        return 2 * self.m

    def __post_init__(self):
        name = type(self).__name__
        check_range(name, "m", self.m, 2, 10**4, integer=True)
        as_floats(self, ("alpha", "beta", "pi", "sigma_xi"))
        check_range(name, "alpha", self.alpha, 0.0, SCALE_MAX)
        check_range(name, "beta", self.beta, 0.0, 1.0, open_high=True)  # Def. 4.6: beta < 1
        check_range(name, "pi", self.pi, 0.0, 1.0)
        check_range(name, "sigma_xi", self.sigma_xi, 0.0, SCALE_MAX)
        check_range(name, "n", self.n, 2, 10**8, integer=True)
        check_range(name, "n_test", self.n_test, 1, 10**8, integer=True)
        check_range(name, "d", self.d, 2 * self.m, 10**6, integer=True)

    @property
    def test_scale(self) -> float:
        """max(1, alpha): the largest |z_j| of a test latent (|z_j| is 1, alpha, beta or beta alpha; beta < 1)."""
        return max(1.0, self.alpha)

    def latents(self, key: jax.Array, n: int, test: str | float | None = None) -> Latents:
        """n latent pairs (class docstring), z_image = z, z_text = psi * z (n, 2m).

        q = P(z_{k+m} = c alpha): 1 in training (test=None), agreement(test, 2) at a test (1/2 "independent" is the
        paper's P*, 0 flipped). spurious = the class whose sign z_{k+m} shows: the label itself when z_{k+m} = c alpha.
        """
        q = 1.0 if test is None else agreement(test, 2)
        m = self.m
        k_y, k_other, k_spu, k_psi = jax.random.split(key, 4)
        y = jax.random.randint(k_y, (n,), 0, 2 * m)
        k, c = y // 2, 1.0 - 2.0 * (y % 2)
        own = jax.nn.one_hot(k, m, dtype=bool)
        others = 2.0 * jax.random.bernoulli(k_other, 0.5, (n, 2 * m)) - 1.0  # signs of the +-beta(alpha) coordinates
        agree = jax.random.bernoulli(k_spu, q, (n,))
        s = jnp.where(agree, c, -c)
        core = jnp.where(own, c[:, None], self.beta * others[:, :m])
        spu = jnp.where(own, (s * self.alpha)[:, None], self.beta * self.alpha * others[:, m:])
        z = jnp.concatenate([core, spu], 1)
        psi = jax.random.bernoulli(k_psi, self.pi, (n, 2 * m)) | jnp.concatenate([own, jnp.zeros_like(own)], 1)
        return Latents(z, z * psi, y, jnp.where(agree, y, y ^ 1))

    def prompts(self, kind: str) -> jax.Array:
        """(2m, 2m), row y = (k, c): core [c e_k, 0] (the paper's prompt D_T E_{P*}[z | y] = D_T c e_k);
        class_mean the training E[psi z | y] = [c e_k, pi alpha c e_k]."""
        m = self.m
        c = jnp.tile(jnp.array([1.0, -1.0]), m)
        core = jnp.repeat(jnp.eye(m), 2, axis=0) * c[:, None]  # (2m, m): row y = c e_k
        spu = core * (self.pi * self.alpha) if kind == "class_mean" else 0 * core  # training E[psi z_{k+m} | y]
        return jnp.concatenate([core, spu], 1)

    def test_groups(self, test: str | float, xp=jnp) -> tuple:
        """ValueError: DM2's test latents are discrete (+-1, +-beta, +-alpha, +-beta alpha), not a Gaussian mixture."""
        raise ValueError("DM2's test latents are discrete, not Gaussian test groups: its exact accuracy is "
                         "theory.dm2_zero_shot_accuracy, its learners' the sampled route")


PRESETS = {cls.model: cls for cls in (M1Config, M2Config, DM2Config)}
# change captions only, never images or labels
CAPTION_FIELDS = ("r", "annotate", "spurious_annotation", "spurious_detail", "pi")
Config = M1Config | M2Config | DM2Config


# Named settings of a preset model: Sagawa, Raghunathan, Koh, Liang (ICML 2020), Appendix A.4 toy example:
# n = 3000, p = 0.9, core ~ N(y, 1), spurious ~ N(a, 0.01), noise features of variance 1/d_noise each.
# DM1: the paper's Data Model 1 (Xue et al. 2024, Def. 4.1) in the regime of its Assumption 4.2 at a
# finite size: sigma_core = 1, sigma_spu = 0.1 (O(1/sqrt(log n)); 1/sqrt(log 1000) = 0.38), p = 0.99
# (1 - o(1)), d = 4n (d = Omega(n)), sigma_xi = 1 (O(log n)); r and spurious_detail are pi_core and pi_spu.
NAMED_SETTINGS = {"sagawa_toy": ("M1", {"sigma_core": 1.0, "sigma_spu": 0.1, "p": 0.9, "sigma_xi": 1.0, "n": 3000,
                                        "d": 3000, "r": 1.0}),
                  "DM1": ("M1", {"sigma_core": 1.0, "sigma_spu": 0.1, "p": 0.99, "sigma_xi": 1.0, "n": 1000,
                                 "d": 4000, "r": 1.0, "spurious_detail": 1.0})}


def make_config(preset: str, **overrides) -> Config:
    """Build a preset (M1, M2, or a NAMED_SETTINGS entry) with overrides; unknown names -> ValueError."""
    if preset in NAMED_SETTINGS:
        preset, named = NAMED_SETTINGS[preset]
        overrides = {**named, **overrides}
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: allowed {sorted(PRESETS) + sorted(NAMED_SETTINGS)}")
    cls = PRESETS[preset]
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown {preset} parameter(s) {unknown}: valid keys are {valid}")
    return cls(**overrides)


def caption_free(cfg: Config) -> Config:
    """cfg with every caption-only field (CAPTION_FIELDS) at 1: same images and labels, for SL learners."""
    return dataclasses.replace(cfg, **{f: 1.0 for f in CAPTION_FIELDS if hasattr(cfg, f)})


def agreement(test: str | float, num_classes: int) -> float:
    """Class-spurious agreement q = P(a = y) of a test distribution: aligned 1, independent 1/K, flipped 0.

    num_classes is the number of values the spurious attribute takes (DM2: 2, the sign of z_{k+m}).
    """
    if isinstance(test, str):
        table = {"aligned": 1.0, "independent": 1.0 / num_classes, "flipped": 0.0}
        if test not in table:
            raise ValueError(f"unknown test distribution {test!r}: allowed {list(TESTS)} or a number in [0, 1]")
        return table[test]
    check_range("test", "q", test, 0.0, 1.0)
    return float(test)


# --------------------------------------------------------------------------- observation model


def orthonormal_dictionary(key: jax.Array, d: int, l: int) -> jax.Array:
    """(d, l) matrix with orthonormal columns, uniformly random (QR of a Gaussian matrix)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (d, l)))
    return q * jnp.sign(jnp.diagonal(r))


def observe(key: jax.Array, z: jax.Array, dictionary: jax.Array, sigma_xi) -> jax.Array:
    """x = D z + xi for each row of z (n, l): returns (n, d), xi ~ N(0, sigma_xi^2 / d I_d)."""
    d = dictionary.shape[0]
    noise = jax.random.normal(key, (z.shape[0], d)) * (sigma_xi / jnp.sqrt(d))
    return z @ dictionary.T + noise


class Latents(NamedTuple):
    """z_image, z_text: (n, l); label: (n,) class index; spurious: (n,) spurious attribute index."""

    z_image: jax.Array
    z_text: jax.Array
    label: jax.Array
    spurious: jax.Array


class Dataset(NamedTuple):
    """x_image: (n, d); x_text: (n, d); label: (n,); spurious: (n,)."""

    x_image: jax.Array
    x_text: jax.Array
    label: jax.Array
    spurious: jax.Array


def sample_latents(key: jax.Array, cfg: Config, n: int, test: str | float | None = None) -> Latents:
    """n latent pairs from the training distribution (test=None) or a shifted test distribution.

    The model's own sampler, cfg.latents: training uses agreement cfg.p; a test uses agreement(test) and, in M2,
    no details (beta = 0). DM2 trains at agreement 1; its "independent" test (agreement 1/2) is the paper's P*.
    """
    return cfg.latents(key, n, test)


def dictionaries(key: jax.Array, cfg: Config) -> tuple[jax.Array, jax.Array]:
    """(D_I, D_T): two independent (d, l) orthonormal dictionaries."""
    k_i, k_t = jax.random.split(key)
    return orthonormal_dictionary(k_i, cfg.d, cfg.latent_dim), orthonormal_dictionary(k_t, cfg.d, cfg.latent_dim)


def sample_dataset(key: jax.Array, cfg: Config, dicts, n: int, test: str | float | None = None) -> Dataset:
    """Observed image-caption pairs (n, d) through the dictionaries `dicts` = (D_I, D_T)."""
    k_z, k_i, k_t = jax.random.split(key, 3)
    lat = sample_latents(k_z, cfg, n, test)
    x_image = observe(k_i, lat.z_image, dicts[0], cfg.sigma_xi)
    x_text = observe(k_t, lat.z_text, dicts[1], cfg.sigma_xi)
    return Dataset(x_image, x_text, lat.label, lat.spurious)


def prompt_latents(cfg: Config, kind: str = "core") -> jax.Array:
    """Zero-shot prompts in latent text space, (K, l).

    kind="core": t_k = e_core(k), the caption naming class k only (M1: the class value -1 / +1).
    kind="class_mean": t_k = E[z_T | y = k]. The model's own prompts, cfg.prompts.
    """
    if kind not in ("core", "class_mean"):
        raise ValueError(f"unknown prompt kind {kind!r}: allowed ['core', 'class_mean']")
    return cfg.prompts(kind)


def test_groups(cfg: Config, test: str | float, xp=jnp) -> tuple:
    """A test distribution as a Gaussian mixture over latents: (weight (G,), label (G,) int, mean (G, l), var (G, l)).

    Given its group g = (y, a) a test latent is z ~ N(mean_g, diag(var_g)), and P(g) = weight_g; labels are class
    indices, G = cfg.num_test_groups (M1: 4, M2: K^2; groups of weight 0 are kept). cfg.test_groups gives the
    model's groups (its docstring); DM2's test latents are discrete: ValueError.
    xp=jnp: JAX arrays, where cfg's float fields may be traced (inside jax.jit); xp=np: NumPy float64 for Python-float
    configs (theory.py). Both run the same float operations; label is a NumPy int array either way.
    """
    return cfg.test_groups(test, xp)
