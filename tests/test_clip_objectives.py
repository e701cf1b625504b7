"""Training objectives: each loss on a tiny batch against a value worked out by hand (the derivation
is in the comment; the number is that formula), jax.grad in float64 against each loss's analytic
gradient written out in numpy (softmax minus one-hot through each similarity), shapes and the
masking of padding tokens and empty queue rows."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmcl_theory.clip import objectives as obj


def softplus_neg(x):
    """-log sigmoid(x) = log(1 + e^-x): the cross-entropy of a 2-way softmax whose correct logit leads by x."""
    return math.log1p(math.exp(-x))


# ----------------------------------------------------------------------------------------------
# Hand-computed values
# ----------------------------------------------------------------------------------------------
def test_clip_loss_hand_computed():
    # S = 2 * I T^T = [[2, 1.2], [0, 1.6]]. Rows (image->text): margins 0.8 and 1.6;
    # columns (text->image): col 0 = [2, 0] margin 2, col 1 = [1.2, 1.6] margin 0.4.
    image = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    text = jnp.array([[1.0, 0.0], [0.6, 0.8]])
    expected = (softplus_neg(0.8) + softplus_neg(1.6) + softplus_neg(2.0) + softplus_neg(0.4)) / 4
    assert expected == pytest.approx(0.298736, abs=1e-6)
    assert float(obj.clip_loss(image, text, jnp.float32(2.0))) == pytest.approx(expected, rel=1e-6)


def test_softmax_cross_entropy_hand_computed():
    # row 0: logsumexp(1, 2, 3) - 3 = log(1 + e^-1 + e^-2); row 1: log 3 (uniform over 3 classes).
    logits = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    expected = (math.log(1 + math.exp(-1) + math.exp(-2)) + math.log(3)) / 2
    assert float(obj.softmax_cross_entropy(logits, jnp.array([2, 0]))) == pytest.approx(expected, rel=1e-6)


def test_sigmoid_cross_entropy_hand_computed():
    # y = 1, z = 0: -log s(0) = log 2; y = 0, z = 2: -log(1 - s(2)) = log(1 + e^2); mean of the two.
    logits = jnp.array([[0.0, 2.0]])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert float(obj.sigmoid_cross_entropy(logits, jnp.array([[1, 0]]))) == pytest.approx(expected, rel=1e-6)
    assert float(obj.sigmoid_cross_entropy(logits, jnp.array([[True, False]]))) == pytest.approx(expected, rel=1e-6)


def test_nt_xent_hand_computed_and_scale_invariant():
    # z = [a, b, c, d] = [(1,0), (0,1), (1,0), (0,-1)], tau = 0.5 so s = 2 <z_k, z_l>.
    # a: positive c (s = 2), others b, d (s = 0): log(2 + e^2) - 2; c is the same.
    # b: positive d (s = -2), others a, c (s = 0): 2 + log(2 + e^-2); d is the same.
    view_1 = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    view_2 = jnp.array([[1.0, 0.0], [0.0, -1.0]])
    expected = (math.log(2 + math.exp(2)) + math.log(2 + math.exp(-2))) / 2
    assert float(obj.nt_xent_loss(view_1, view_2, 0.5)) == pytest.approx(expected, rel=1e-6)
    # projections are normalised inside: scaling a view changes nothing
    assert float(obj.nt_xent_loss(3 * view_1, 0.2 * view_2, 0.5)) == pytest.approx(expected, rel=1e-6)


def test_slip_is_clip_plus_weighted_simclr():
    image = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    text = jnp.array([[1.0, 0.0], [0.6, 0.8]])
    view_1 = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    view_2 = jnp.array([[1.0, 0.0], [0.0, -1.0]])
    clip = (softplus_neg(0.8) + softplus_neg(1.6) + softplus_neg(2.0) + softplus_neg(0.4)) / 4
    simclr = (math.log(2 + math.exp(2)) + math.log(2 + math.exp(-2))) / 2
    got = obj.slip_loss(image, text, jnp.float32(2.0), view_1, view_2, ssl_weight=0.5, ssl_temperature=0.5)
    assert float(got) == pytest.approx(clip + 0.5 * simclr, rel=1e-6)


# Two images of 2 patches, two texts of 3 tokens; text 0 has 2 real tokens, text 1 one. The padding
# tokens are chosen to match the patches better than any real token, so leaking them would show.
PATCHES = jnp.array([[[1.0, 0.0], [0.0, 1.0]],
                     [[0.6, 0.8], [0.6, 0.8]]])
TOKENS = jnp.array([[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]],
                    [[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]]])
MASK = jnp.array([[True, True, False], [True, False, False]])


def test_token_similarities_hand_computed_with_padding_masked():
    # image_to_text[i, j] = mean over patches of the best real token:
    #   (0,0): patch (1,0) -> 1, patch (0,1) -> 1: 1.   (0,1): only (0.8,0.6): 0.8 and 0.6: 0.7.
    #   (1,0): (0.6,0.8) vs (1,0), (0,1): 0.8.            (1,1): 0.48 + 0.48 = 0.96.
    # text_to_image[i, j] = mean over real tokens of the best patch:
    #   (0,0): 1, 1: 1.   (0,1): max(0.8, 0.6) = 0.8.   (1,0): 0.6, 0.8: 0.7.   (1,1): 0.96.
    image_to_text, text_to_image = obj.token_similarities(PATCHES, TOKENS, MASK)
    np.testing.assert_allclose(image_to_text, [[1.0, 0.7], [0.8, 0.96]], atol=1e-6)
    np.testing.assert_allclose(text_to_image, [[1.0, 0.8], [0.7, 0.96]], atol=1e-6)
    unmasked, _ = obj.token_similarities(PATCHES, TOKENS, jnp.ones_like(MASK))
    assert float(unmasked[1, 0]) == pytest.approx(1.0) and float(unmasked[0, 1]) == pytest.approx(1.0)


def test_filip_loss_hand_computed():
    # scale 10: image->text rows of 10 * image_to_text: [10, 7] (margin 3), [8, 9.6] (margin 1.6);
    # text->image columns of 10 * text_to_image: [10, 7] (margin 3), [8, 9.6] (margin 1.6).
    expected = (2 * softplus_neg(3.0) + 2 * softplus_neg(1.6)) / 4
    assert float(obj.filip_loss(PATCHES, TOKENS, MASK, jnp.float32(10.0))) == pytest.approx(expected, rel=1e-6)


def test_token_similarity_shapes_for_unequal_batches():
    rng = np.random.default_rng(0)
    image_to_text, text_to_image = obj.token_similarities(
        rng.normal(size=(3, 5, 4)), rng.normal(size=(2, 6, 4)), np.ones((2, 6), bool))
    assert image_to_text.shape == text_to_image.shape == (3, 2)


# Queue rows: (1,0), (0,1), (0.6,0.8) filled; row 3 (0.8,0.6) not yet filled (count 3) and the
# exact match of caption 0, so using it would show.
QUEUE = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
IMAGES = jnp.array([[1.0, 0.0], [0.0, 1.0]])
CAPTIONS = jnp.array([[0.8, 0.6], [0.0, 1.0]])


def test_nearest_neighbours_skip_unfilled_rows():
    # caption (0.8,0.6): similarities 0.8, 0.6, 0.96 -> row 2; caption (0,1): 0, 1, 0.8 -> row 1.
    nn = obj.nearest_neighbours(CAPTIONS, QUEUE, jnp.arange(4) < 3)
    np.testing.assert_allclose(nn, [[0.6, 0.8], [0.0, 1.0]])


def test_declip_hand_computed_and_empty_queue():
    # NN term: N = 2 * I [(0.6,0.8), (0,1)]^T = [[1.2, 0], [1.6, 2]]: row margins 1.2 and 0.4.
    nn_term = (softplus_neg(1.2) + softplus_neg(0.4)) / 2
    # CLIP term: S = 2 * I C^T = [[1.6, 0], [1.2, 2]]: rows 1.6, 0.8; columns [1.6, 1.2] -> 0.4, [0, 2] -> 2.
    clip = (softplus_neg(1.6) + softplus_neg(0.8) + softplus_neg(0.4) + softplus_neg(2.0)) / 4
    scale = jnp.float32(2.0)
    got = obj.declip_loss(IMAGES, CAPTIONS, scale, QUEUE, jnp.int32(3), nn_weight=0.25)
    assert float(got) == pytest.approx(clip + 0.25 * nn_term, rel=1e-6)
    empty = obj.declip_loss(IMAGES, CAPTIONS, scale, QUEUE, jnp.int32(0), nn_weight=0.25)
    assert float(empty) == pytest.approx(clip, rel=1e-6)


def test_defilip_is_filip_plus_nn_term():
    filip = (2 * softplus_neg(3.0) + 2 * softplus_neg(1.6)) / 4
    # NN term at scale 10: N = 10 * [[0.6, 0], [0.8, 1]]: margins 6 and 2.
    nn_term = (softplus_neg(6.0) + softplus_neg(2.0)) / 2
    got = obj.defilip_loss(PATCHES, TOKENS, MASK, IMAGES, CAPTIONS, jnp.float32(10.0), QUEUE, jnp.int32(3),
                           nn_weight=0.5)
    assert float(got) == pytest.approx(filip + 0.5 * nn_term, rel=1e-6)


def test_enqueue_is_a_fifo_ring():
    queue = jnp.zeros((3, 1))
    queue, count, nxt = obj.enqueue(queue, jnp.int32(0), jnp.int32(0), jnp.array([[1.0], [2.0]]))
    np.testing.assert_array_equal(queue[:, 0], [1, 2, 0])
    assert (int(count), int(nxt)) == (2, 2)
    queue, count, nxt = obj.enqueue(queue, count, nxt, jnp.array([[3.0], [4.0]]))
    np.testing.assert_array_equal(queue[:, 0], [4, 2, 3])  # 3 fills row 2, 4 overwrites the oldest
    assert (int(count), int(nxt)) == (3, 1)


def test_nn_term_has_no_gradient_through_the_queue():
    grad = jax.grad(lambda q: obj.declip_loss(IMAGES, CAPTIONS, 2.0, q, jnp.int32(3), 1.0))(QUEUE)
    np.testing.assert_array_equal(grad, 0.0)


# ----------------------------------------------------------------------------------------------
# Gradients against the analytic gradients, written out here in float64 numpy
# ----------------------------------------------------------------------------------------------
def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _softmax(a, axis):
    e = np.exp(a - a.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _symmetric_ce_grad_logits(logits):
    """d/dS of -(1/2B) sum_i [log softmax_j(S_ij)|_i + log softmax_i(S_ij)|_j=i]: softmax minus one-hot, each way."""
    b = logits.shape[0]
    return ((_softmax(logits, 1) - np.eye(b)) + (_softmax(logits, 0) - np.eye(b))) / (2 * b)


def _grad_clip(a, b, scale):
    """CLIP's loss with S = scale a b^T: dL/da = scale (dL/dS) b."""
    return scale * _symmetric_ce_grad_logits(scale * a @ b.T) @ b


def _grad_softmax_ce(z, labels):
    return (_softmax(z, 1) - np.eye(z.shape[1])[labels]) / z.shape[0]


def _grad_sigmoid_ce(z, y):
    return (1 / (1 + np.exp(-z)) - y) / z.size


def _grad_through_normalisation(x, g):
    """dL/dx for z = x / |x| (rows) given g = dL/dz: (g - (g . z) z) / |x|."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    z = x / norm
    return (g - np.sum(g * z, axis=1, keepdims=True) * z) / norm


def _grad_nt_xent(v1, v2, tau):
    """NT-Xent w.r.t. view_1 (before normalisation): with z = normalise([v1; v2]) and s = z z^T / tau (self-pairs
    excluded), dL/ds_kl = (1/2B) (softmax_{l != k}(s_k.)_l - [l = p(k)]); dL/dz = (G + G^T) z / tau."""
    b = v1.shape[0]
    z = _unit(np.concatenate([v1, v2]))
    s = z @ z.T / tau
    np.fill_diagonal(s, -np.inf)
    target = np.eye(2 * b)[(np.arange(2 * b) + b) % (2 * b)]
    g = (_softmax(s, 1) - target) / (2 * b)
    dz = (g + g.T) @ z / tau
    return _grad_through_normalisation(v1, dz[:b])


def _grad_filip(x, text, mask, scale):
    """FILIP w.r.t. the image tokens x (B, P, D). A_ij = (1/P) sum_p <x_ip, y_j t*(i,j,p)> (t* the best real token),
    R_ij = (1/|M_j|) sum_{t in M_j} <x_i p*(i,j,t), y_jt> (p* the best patch); the loss is the image-to-text
    cross-entropy over the rows of scale A and the text-to-image one over the columns of scale R."""
    bsz, patches, _ = x.shape
    sim = np.einsum("ipd,jtd->ijpt", x, text)
    sim_masked = np.where(mask[None, :, None, :], sim, -np.inf)
    a = sim_masked.max(3).mean(2)
    counts = mask.sum(1)
    r = np.where(mask[None], sim.max(2), 0.0).sum(2) / counts[None]
    g_a = scale * (_softmax(scale * a, 1) - np.eye(bsz)) / (2 * bsz)
    g_r = scale * (_softmax(scale * r, 0) - np.eye(bsz)) / (2 * bsz)
    grad = np.zeros_like(x)
    for i in range(bsz):
        for j in range(bsz):
            for p in range(patches):
                grad[i, p] += g_a[i, j] / patches * text[j, np.argmax(sim_masked[i, j, p])]
            for t in np.flatnonzero(mask[j]):
                grad[i, np.argmax(sim[i, j, :, t])] += g_r[i, j] / counts[j] * text[j, t]
    return grad


def _grad_declip(a, b, scale, queue, count, weight):
    """CLIP's gradient plus weight x the nearest-neighbour term's: N = scale a nn^T with nn_i the queue row (among
    the first `count`) nearest to b_i; dL_nn/da = scale (1/B) (softmax_rows(N) - I) nn."""
    nn = queue[np.argmax(b @ queue[:count].T, axis=1)]
    logits = scale * a @ nn.T
    nn_grad = scale * (_softmax(logits, 1) - np.eye(a.shape[0])) @ nn / a.shape[0]
    return _grad_clip(a, b, scale) + weight * nn_grad


@pytest.mark.parametrize("name", ["clip", "softmax_ce", "sigmoid_ce", "nt_xent", "filip", "declip"])
def test_gradient_matches_the_analytic_gradient(name):
    rng = np.random.default_rng(1)
    a, b = _unit(rng.normal(size=(3, 4))), _unit(rng.normal(size=(3, 4)))
    if name == "clip":
        x, expected = a, _grad_clip(a, b, 3.0)
        f = lambda e: obj.clip_loss(e, jnp.asarray(b), 3.0)
    elif name == "softmax_ce":
        x, labels = rng.normal(size=(3, 4)), np.array([0, 2, 1])
        f, expected = (lambda z: obj.softmax_cross_entropy(z, jnp.asarray(labels))), _grad_softmax_ce(x, labels)
    elif name == "sigmoid_ce":
        x, y = rng.normal(size=(3, 4)), rng.integers(0, 2, (3, 4))
        f, expected = (lambda z: obj.sigmoid_cross_entropy(z, jnp.asarray(y))), _grad_sigmoid_ce(x, y)
    elif name == "nt_xent":
        x = rng.normal(size=(3, 4))
        f, expected = (lambda v: obj.nt_xent_loss(v, jnp.asarray(b), 0.3)), _grad_nt_xent(x, b, 0.3)
    elif name == "filip":
        text = _unit(rng.normal(size=(3, 4, 2)))
        mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
        x = _unit(rng.normal(size=(3, 2, 2)))
        f = lambda p: obj.filip_loss(p, jnp.asarray(text), jnp.asarray(mask), 4.0)
        expected = _grad_filip(x, text, mask, 4.0)
    else:
        queue = _unit(rng.normal(size=(5, 4)))
        f = lambda e: obj.declip_loss(e, jnp.asarray(b), 3.0, jnp.asarray(queue), jnp.int32(4), 0.7)
        x, expected = a, _grad_declip(a, b, 3.0, queue, 4, 0.7)
    with jax.enable_x64(True):
        x64 = jnp.asarray(x, jnp.float64)
        assert f(x64).dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(jax.grad(f)(x64)), expected, rtol=1e-9, atol=1e-12)
