"""Checks of statements made in docs/ that the rest of the suite does not test.

docs/temperature.md: the large-temperature expansion of the symmetric InfoNCE loss and its relation
to losses.linear_contrastive_loss. The expected coefficients are computed here from the similarity
matrix alone (row/column means, variances, third central moments); the exact loss is the package's
losses.infonce_loss in float64.
"""

import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmcl_theory.losses import infonce_loss, linear_contrastive_loss
from mmcl_theory.theory import contrastive_cross_covariance


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _paired_unit_embeddings(n: int, p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm image/text embeddings, paired (v_i near u_i) and sharing a mean direction, so that
    the similarity rows are skewed (non-zero third moments) and the expansion terms are all visible."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, p))
    u[:, 0] += 1.5
    v = u + 0.8 * rng.normal(size=(n, p))
    return _unit_rows(u), _unit_rows(v)


def _central_moment(s: np.ndarray, order: int) -> float:
    """Mean over the n rows and n columns of the order-th central moment of the similarities (1/n)."""
    rows = ((s - s.mean(1, keepdims=True)) ** order).mean(1)
    cols = ((s - s.mean(0, keepdims=True)) ** order).mean(0)
    return float((rows.sum() + cols.sum()) / (2 * s.shape[0]))


def test_infonce_large_tau_expansion():
    """InfoNCE = log n + ((n-1)/n) L_lin / tau + V / (2 tau^2) + K3 / (6 tau^3) + O(tau^-4), with the
    rigorous bounds 0 <= first-order error <= 1/(2 tau^2) and |second-order error| <= 1/(3 tau^3)."""
    n, p = 12, 4
    u, v = _paired_unit_embeddings(n, p, seed=0)
    s = u @ v.T
    first = -np.trace(s) / n + s.sum() / n**2  # the first cumulant term, written from its definition
    variance, third = _central_moment(s, 2), _central_moment(s, 3)
    assert abs(third) > 1e-3  # the test embeddings do exercise the third-order term

    taus = (10.0, 100.0, 1000.0)
    with jax.enable_x64(True):
        lin = float(linear_contrastive_loss(jnp.asarray(u), jnp.asarray(v)))
        exact = {tau: float(infonce_loss(jnp.asarray(u), jnp.asarray(v), jnp.asarray(1.0 / tau))) for tau in taus}
    # the first-order coefficient is the package's linear loss times (n-1)/n, exactly
    assert first == pytest.approx((n - 1) / n * lin, rel=1e-13, abs=1e-15)

    err1, err2 = {}, {}
    for tau in taus:
        err1[tau] = exact[tau] - (math.log(n) + first / tau)
        err2[tau] = err1[tau] - variance / (2 * tau**2)
        assert 0.0 <= err1[tau] <= 1 / (2 * tau**2)  # Jensen below, Hoeffding's lemma above
        assert abs(err2[tau]) <= 1 / (3 * tau**3)  # Lagrange remainder, |third central moment| <= 2
        # the coefficients: err1 = V/(2 tau^2) + K3/(6 tau^3) + O(tau^-4), err2 = K3/(6 tau^3) + O(tau^-4)
        assert err1[tau] * tau**2 == pytest.approx(variance / 2 + third / (6 * tau), rel=1e-3)
        if tau >= 100:  # at tau = 10 the fourth-order term is still 0.3% of err2
            assert err2[tau] * tau**3 == pytest.approx(third / 6, rel=1e-3)
    # the errors fall as 1/tau^2 and 1/tau^3
    for small, large in ((10.0, 100.0), (100.0, 1000.0)):
        assert err1[small] / err1[large] == pytest.approx(100.0, rel=0.05)
        assert err2[small] / err2[large] == pytest.approx(1000.0, rel=0.15)


def test_normalised_linear_loss_is_reweighted_cross_covariance():
    """For linear encoders, the linear loss of the normalised embeddings is -<W_I^T W_T, S~> where S~ is
    the contrastive cross-covariance of the inputs rescaled by 1/||W_I x_I,i|| and 1/||W_T x_T,i||."""
    rng = np.random.default_rng(1)
    n, d, p = 9, 7, 3
    x_image, x_text = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 0.5
    w_image, w_text = rng.normal(size=(p, d)), rng.normal(size=(p, d))
    emb_i, emb_t = x_image @ w_image.T, x_text @ w_text.T
    norm_i, norm_t = np.linalg.norm(emb_i, axis=1), np.linalg.norm(emb_t, axis=1)
    with jax.enable_x64(True):
        loss = float(linear_contrastive_loss(jnp.asarray(emb_i / norm_i[:, None]), jnp.asarray(emb_t / norm_t[:, None])))
    s_tilde = contrastive_cross_covariance(x_image / norm_i[:, None], x_text / norm_t[:, None])
    assert loss == pytest.approx(-np.sum((w_image.T @ w_text) * s_tilde), rel=1e-12)


DOCS = Path(__file__).resolve().parents[1] / "docs"


def _anchors(path: Path) -> set[str]:
    return set(re.findall(r'<a id="([^"]+)"></a>', path.read_text()))


def test_doc_links_resolve_to_anchors():
    """Every relative link in docs/ names an existing page, and every #anchor an explicit <a id> in it."""
    pages = sorted(DOCS.glob("*.md"))
    assert {p.name for p in pages} >= {"README.md", "models.md", "learners.md", "theory.md", "claims.md",
                                       "temperature.md"}
    broken = []
    for page in pages:
        for target, anchor in re.findall(r"\]\(([\w./-]*?\.md|)(?:#([\w-]+))?\)", page.read_text()):
            linked = page if target == "" else (page.parent / target)
            if not linked.is_file():
                broken.append(f"{page.name}: {target}")
            elif anchor and anchor not in _anchors(linked):
                broken.append(f"{page.name}: {target}#{anchor}")
    assert broken == []


def test_docs_cite_only_the_project():
    """The documents are the project's own: no citation of material outside the repository."""
    for page in DOCS.rglob("*"):
        if page.is_file():
            assert "SPEC" not in page.read_text(), page
