"""Tests for snn.network: gradients against finite differences, computing a layer in slices of
neurons, initialisation, cost and prediction."""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import pytest

from snn import network as nn
from snn.data import synthetic_dataset
from tests.helpers import analytic_gradients, flat, forward_cache, numerical_gradients

# --- the gradient check ------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", ["relu", "tanh", "sigmoid"])
def test_backpropagation_matches_central_differences(hidden: str) -> None:
    ds = synthetic_dataset(n_x=5, m_train=16, m_test=1, seed=2)
    X, Y = ds.train_x, ds.train_y
    # xavier: weights of order 1/sqrt(n), so relu units are alive and the gradients large
    # enough to compare; b non-zero so the bias gradients are exercised away from the origin.
    params = [
        (W, np.full_like(b, 0.1))
        for W, b in nn.initialize([5, 4, 3, 1], seed=3, initialization="xavier")
    ]
    activations = [hidden, hidden, "sigmoid"]

    # Central differences are meaningless across a relu kink: no Z may be within reach of eps.
    _, cache = forward_cache(params, activations, X)
    if hidden == "relu":
        assert min(np.abs(Z).min() for _, Z in cache[:-1]) > 1e-4
        assert all((Z > 0).any() for _, Z in cache[:-1]), "a relu layer is entirely dead"

    numeric = flat(numerical_gradients(params, activations, X, Y, eps=1e-7))
    analytic = flat(analytic_gradients(params, activations, X, Y))
    assert numeric.shape == analytic.shape == (5 * 4 + 4 + 4 * 3 + 3 + 3 * 1 + 1,)
    assert np.linalg.norm(analytic) > 1e-3  # a check of zero gradients would prove nothing
    difference = np.linalg.norm(numeric - analytic) / (
        np.linalg.norm(numeric) + np.linalg.norm(analytic)
    )
    assert difference < 1e-7, f"relative difference {difference:.3e}"


def test_gradient_check_detects_a_wrong_derivative(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: with a derivative off by 10 %, the difference is large."""
    ds = synthetic_dataset(n_x=5, m_train=16, m_test=1, seed=2)
    params = nn.initialize([5, 4, 3, 1], seed=3, initialization="xavier")
    activations = ["tanh", "tanh", "sigmoid"]
    right = nn.ACTIVATIONS["tanh"]
    monkeypatch.setitem(nn.ACTIVATIONS, "tanh", (right[0], lambda dA, Z: 1.1 * right[1](dA, Z)))
    numeric = flat(numerical_gradients(params, activations, ds.train_x, ds.train_y))
    analytic = flat(analytic_gradients(params, activations, ds.train_x, ds.train_y))
    difference = np.linalg.norm(numeric - analytic) / (
        np.linalg.norm(numeric) + np.linalg.norm(analytic)
    )
    assert difference > 1e-3


# --- a layer computed in slices of neurons -----------------------------------------------------

# Rows of Z, dW and db computed from a slice of W / dZ may go through a different BLAS kernel
# (e.g. gemv for one row, gemm for many) that adds the products in a different order, so they
# equal the whole-layer rows up to rounding only: a relative tolerance of 1e-12 (about 5,000
# ulps) is far above that rounding and far below any real error. dA_prev is a sum over the
# neurons split into partial sums (one per slice), added in another order: the same tolerance.
RTOL = 1e-12


def _layer(n: int = 7, n_prev: int = 6, m: int = 9, seed: int = 0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n, n_prev))
    b = rng.normal(size=(n, 1))
    A_prev = rng.uniform(0.1, 1.0, size=(n_prev, m))
    dZ = rng.normal(size=(n, m))
    return W, b, A_prev, dZ


def _slices(n: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


@pytest.mark.parametrize("size", [1, 2, 3])
def test_layer_in_slices_equals_whole_layer(size: int) -> None:
    W, b, A_prev, dZ = _layer()
    Z = nn.linear_forward(W, b, A_prev)
    dW, db, dA_prev = nn.linear_backward(dZ, A_prev, W)

    partials = []
    for lo, hi in _slices(W.shape[0], size):
        Z_rows = nn.linear_forward(W[lo:hi], b[lo:hi], A_prev)
        np.testing.assert_allclose(Z_rows, Z[lo:hi], rtol=RTOL, atol=0)
        dW_rows, db_rows, partial = nn.linear_backward(dZ[lo:hi], A_prev, W[lo:hi])
        np.testing.assert_allclose(dW_rows, dW[lo:hi], rtol=RTOL, atol=0)
        np.testing.assert_allclose(db_rows, db[lo:hi], rtol=RTOL, atol=0)
        assert partial.shape == dA_prev.shape
        partials.append(partial)

    np.testing.assert_allclose(nn.sum_partials(partials), dA_prev, rtol=RTOL, atol=0)
    # ... and the partials do matter: leaving one out is far outside the tolerance.
    assert not np.allclose(nn.sum_partials(partials[:-1]), dA_prev, rtol=1e-3, atol=0)


def test_one_slice_of_the_whole_layer_is_bit_identical() -> None:
    W, b, A_prev, dZ = _layer()
    n = W.shape[0]
    assert np.array_equal(
        nn.linear_forward(W[0:n], b[0:n], A_prev), nn.linear_forward(W, b, A_prev)
    )
    whole = nn.linear_backward(dZ, A_prev, W)
    sliced = nn.linear_backward(dZ[0:n], A_prev, W[0:n])
    for a, c in zip(sliced, whole, strict=True):
        assert np.array_equal(a, c)
    assert np.array_equal(nn.sum_partials([sliced[2]]), whole[2])


def test_sum_partials_adds_in_slice_order() -> None:
    # (a + b) + c differs from a + (b + c) here; the function must use the first.
    a, b, c = np.array([1e16]), np.array([-1e16]), np.array([1.0])
    assert nn.sum_partials([a, b, c])[0] == 1.0
    assert nn.sum_partials([a, b + c])[0] == 0.0


# --- initialisation ----------------------------------------------------------------------------


def test_scaled_initialization_is_the_reference_draw() -> None:
    params = nn.initialize([12288, 7, 1], seed=1, initialization="scaled")
    # The first standard normal of seed 1, well known from the reference notebook.
    assert params[0][0][0, 0] == 1.6243453636632417 * 0.01
    np.random.seed(1)
    W1 = np.random.randn(7, 12288) * 0.01
    W2 = np.random.randn(1, 7) * 0.01
    assert [W.shape for W, _ in params] == [(7, 12288), (1, 7)]
    assert np.array_equal(params[0][0], W1) and np.array_equal(params[1][0], W2)
    for (_, b), n in zip(params, (7, 1), strict=True):
        assert b.shape == (n, 1) and not b.any()


@pytest.mark.parametrize(
    ("initialization", "scale"),
    [
        ("scaled", lambda n: 0.01),
        ("xavier", lambda n: 1 / math.sqrt(n)),
        ("he", lambda n: math.sqrt(2 / n)),
    ],
)
def test_initialization_scale(initialization: str, scale) -> None:
    dims = [12288, 7, 1]
    params = nn.initialize(dims, seed=1, initialization=initialization)
    np.random.seed(1)
    for (W, _), n_prev, n in zip(params, dims[:-1], dims[1:], strict=True):
        draw = np.random.randn(n, n_prev)
        np.testing.assert_allclose(W, draw * scale(n_prev), rtol=1e-15, atol=0)
    # The spread of the 86,016 weights of layer 1 is the intended one (within 2 %).
    assert params[0][0].std() == pytest.approx(scale(12288), rel=0.02)


def test_initialization_is_seeded_and_rejects_unknown_scheme() -> None:
    a = nn.initialize([5, 3, 1], seed=7)
    b = nn.initialize([5, 3, 1], seed=7)
    c = nn.initialize([5, 3, 1], seed=8)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0][0], c[0][0])
    with pytest.raises(ValueError, match="glorot"):
        nn.initialize([5, 3, 1], seed=1, initialization="glorot")


@pytest.mark.parametrize("initialization", nn.INITIALIZATIONS)
@pytest.mark.parametrize("seed", [0, 1, 3, 2**32 - 1])
def test_initialization_draws_what_the_seeded_global_generator_drew(
    initialization: str, seed: int
) -> None:
    """The run's own generator gives the very numbers the global one gave: bit for bit."""
    dims = [12288, 20, 7, 5, 1]
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        expected = [np.random.randn(n, n_prev) for n_prev, n in itertools.pairwise(dims)]
    finally:
        np.random.set_state(state)
    params = nn.initialize(dims, seed, initialization)
    for (W, b), draw, n_prev in zip(params, expected, dims[:-1], strict=True):
        if initialization == "scaled":
            assert np.array_equal(W, draw * 0.01)
        elif initialization == "xavier":
            assert np.array_equal(W, draw / np.sqrt(n_prev))
        else:
            assert np.array_equal(W, draw * np.sqrt(2 / n_prev))
        assert not b.any()


def test_initialization_neither_reads_nor_moves_the_global_generator() -> None:
    """Runs initialised at once in threads of one process (the local engine's) cannot share a
    generator: one's seed would reset the other's draws half-way."""
    state = np.random.get_state()
    try:
        alone = nn.initialize([50, 7, 1], seed=1)
        np.random.seed(123)
        np.random.randn(3)  # a generator somewhere in the middle of its stream
        before = np.random.get_state()
        again = nn.initialize([50, 7, 1], seed=1)
        after = np.random.get_state()
    finally:
        np.random.set_state(state)
    assert before[0] == after[0] and np.array_equal(before[1], after[1])
    assert before[2:] == after[2:]  # position, and the cached second normal
    for (W, _), (W2, _) in zip(alone, again, strict=True):
        assert np.array_equal(W, W2)


def test_initializations_in_threads_at_once_each_equal_alone() -> None:
    """Three networks of the real input width initialised at once, 20 times: each is what it
    is alone. (With the global generator shared, most rounds mixed their draws.)"""
    networks = [([12288, 7, 1], "scaled"), ([12288, 5, 3, 1], "xavier"), ([12288, 2, 1], "he")]
    alone = [nn.initialize(dims, 1, init) for dims, init in networks]

    def initialise(i: int, together: threading.Barrier, got: list) -> None:
        together.wait()
        got[i] = nn.initialize(networks[i][0], 1, networks[i][1])

    for _ in range(20):
        got: list = [None] * len(networks)
        together = threading.Barrier(len(networks))
        threads = [
            threading.Thread(target=initialise, args=(i, together, got))
            for i in range(len(networks))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for params, reference in zip(got, alone, strict=True):
            for (W, b), (W2, b2) in zip(params, reference, strict=True):
                assert np.array_equal(W, W2) and np.array_equal(b, b2)


# --- cost, prediction ---------------------------------------------------------------------------


def test_cost_of_a_known_example() -> None:
    AL = np.array([[0.8, 0.9, 0.4]])
    Y = np.array([[1.0, 1.0, 0.0]])
    expected = -(math.log(0.8) + math.log(0.9) + math.log(0.6)) / 3
    c = nn.cost(AL, Y)
    assert isinstance(c, float)
    assert c == pytest.approx(expected, rel=1e-15)
    assert c == pytest.approx(0.2797765635793422, rel=1e-15)


def test_cost_gradient_is_the_derivative_of_the_cost() -> None:
    AL = np.array([[0.8, 0.9, 0.4]])
    Y = np.array([[1.0, 1.0, 0.0]])
    np.testing.assert_allclose(nn.cost_gradient(AL, Y), [[-1 / 0.8, -1 / 0.9, 1 / 0.6]], rtol=1e-15)


# A confident, correct model: outputs exactly 1 (Z over about 37) and exactly 0 (Z under -745).
SATURATED_Z = np.array([[90.0, -800.0, 40.0, -40.0, 2.0]])
SATURATED_Y = np.array([[1.0, 0.0, 1.0, 0.0, 1.0]])


def _textbook(AL: np.ndarray, Y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """The cost, summed cost and dA[L] as the seed computed them."""
    m = Y.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (1.0 / m) * (-np.dot(Y, np.log(AL).T) - np.dot(1 - Y, np.log(1 - AL).T))
        summed = np.sum(np.multiply(-np.log(AL), Y) + np.multiply(-np.log(1 - AL), 1 - Y))
        dAL = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))
    return float(np.squeeze(c)), float(summed), dAL


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # sigmoid(-800)
def test_a_saturated_output_has_a_finite_cost_from_z() -> None:
    AL = nn.sigmoid(SATURATED_Z)
    assert AL[0, 0] == 1.0 and AL[0, 1] == 0.0  # where the textbook formulas break
    assert not math.isfinite(_textbook(AL, SATURATED_Y)[0])
    assert nn.saturated(AL) and not nn.saturated(nn.sigmoid(np.array([[3.0, -3.0]])))
    # each example's cross-entropy, -log(sigmoid(z)) or -log(1 - sigmoid(z)), exactly
    terms = [math.log1p(math.exp(-abs(z))) for z in SATURATED_Z[0]]
    terms[4] = -math.log(1 / (1 + math.exp(-2.0)))
    expected = sum(terms) / 5
    assert nn.cost(AL, SATURATED_Y, SATURATED_Z) == pytest.approx(expected, rel=1e-12)
    assert nn.summed_cost(AL, SATURATED_Y, SATURATED_Z) == pytest.approx(5 * expected, rel=1e-12)
    # without Z, A is clipped into (0, 1): finite too
    for c in (nn.cost(AL, SATURATED_Y), nn.summed_cost(AL, SATURATED_Y)):
        assert math.isfinite(c) and c >= 0


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # sigmoid(-800)
def test_a_saturated_output_has_a_finite_gradient_and_a_zero_dz() -> None:
    AL = nn.sigmoid(SATURATED_Z)
    dAL = nn.cost_gradient(AL, SATURATED_Y)
    assert np.isfinite(dAL).all()
    dZ = nn.sigmoid_backward(dAL, SATURATED_Z)
    assert np.isfinite(dZ).all()
    assert dZ[0, 0] == 0.0 and dZ[0, 1] == 0.0  # the limit of A - Y for a correct output
    assert dZ[0, 4] == pytest.approx(AL[0, 4] - 1.0, rel=1e-12)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # sigmoid(-800)
def test_a_saturated_wrong_output_has_no_finite_gradient() -> None:
    """A wrong output saturated the other way (A exactly 1 - Y) has a true dZ of +-1 that
    dA[L] cannot carry through s (1 - s) = 0: its gradient stays infinite, so the run fails as
    diverged instead of learning nothing from it."""
    Z, Y = np.array([[90.0, -800.0, 2.0]]), np.array([[0.0, 1.0, 1.0]])
    dAL = nn.cost_gradient(nn.sigmoid(Z), Y)
    assert np.isinf(dAL[0, 0]) and np.isinf(dAL[0, 1]) and np.isfinite(dAL[0, 2])
    assert math.isfinite(nn.cost(nn.sigmoid(Z), Y, Z))  # the cost itself is finite, from Z


def test_the_costs_and_the_gradient_keep_their_bits_where_they_were_finite() -> None:
    rng = np.random.default_rng(4)
    for m in (1, 7, 209, 1000):
        Z = rng.normal(scale=6.0, size=(1, m))
        AL, Y = nn.sigmoid(Z), (rng.uniform(size=(1, m)) < 0.5).astype(np.float64)
        c, summed, dAL = _textbook(AL, Y)
        assert math.isfinite(c)
        assert nn.cost(AL, Y) == c and nn.cost(AL, Y, Z) == c
        assert nn.summed_cost(AL, Y) == summed and nn.summed_cost(AL, Y, Z) == summed
        assert np.array_equal(nn.cost_gradient(AL, Y), dAL)


def test_predict_threshold_is_strictly_above_one_half() -> None:
    AL = np.array([[0.0, 0.4999999, 0.5, 0.5000001, 1.0]])
    predicted = nn.predict(AL)
    assert predicted.dtype.kind == "i"
    assert predicted.tolist() == [[0, 0, 0, 1, 1]]
    assert nn.accuracy(AL, np.array([[0, 0, 1, 1, 1]])) == 0.8


@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_activations_are_pure(name: str) -> None:
    Z = np.array([[-2.0, -0.5, 0.0, 0.5, 2.0]])
    dA = np.ones_like(Z)
    before = Z.copy(), dA.copy()
    nn.activate(Z, name)
    nn.activation_backward(dA, Z, name)
    assert np.array_equal(Z, before[0]) and np.array_equal(dA, before[1])
