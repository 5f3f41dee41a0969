"""The mathematics of a fully connected network, as plain numpy functions.

Notation (one column per example, as in the classic course this project follows):

    A[0] = X                      the input, shape (n_x, m)
    Z[l] = W[l] . A[l-1] + b[l]   the linear step of layer l, shape (n_l, m)
    A[l] = g[l](Z[l])             the activation of layer l
    cost = binary cross-entropy of A[L] against the labels Y, shape (1, m)

Every function here is pure: arrays in, new arrays out, no I/O, nothing mutated. Each one works
on a *shard of neurons* (rows lo..hi of a layer) as well as on a whole layer, because the state
machine fans a layer out over many Lambda invocations, each computing a few neurons (a shard):

    rows of Z[l]          = W[l][rows] . A[l-1] + b[l][rows]
    rows of dW[l], db[l]  come from the same rows of dZ[l] only
    dA[l-1]               = sum over the shards of W[l][rows].T . dZ[l][rows]

The last line is the one place where sharding changes the arithmetic: the sum over neurons is
split into partial sums. Engines therefore add the partials in shard order, and compare bit for
bit only runs with the same shard size.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

import numpy as np

Array = np.ndarray

# --- activations and their derivatives -----------------------------------------------------------


def sigmoid(Z: Array) -> Array:
    return 1 / (1 + np.exp(-Z))


def relu(Z: Array) -> Array:
    return np.maximum(0, Z)


def tanh(Z: Array) -> Array:
    return np.tanh(Z)


def sigmoid_backward(dA: Array, Z: Array) -> Array:
    """dZ = dA * s * (1 - s), with s = sigmoid(Z)."""
    s = 1 / (1 + np.exp(-Z))
    return dA * s * (1 - s)


def relu_backward(dA: Array, Z: Array) -> Array:
    """dZ = dA where Z > 0, else 0."""
    dZ = np.array(dA, copy=True)
    dZ[Z <= 0] = 0
    return dZ


def tanh_backward(dA: Array, Z: Array) -> Array:
    """dZ = dA * (1 - tanh(Z)^2)."""
    return dA * (1 - np.tanh(Z) ** 2)


ACTIVATIONS: dict[str, tuple[Callable[[Array], Array], Callable[[Array, Array], Array]]] = {
    "relu": (relu, relu_backward),
    "sigmoid": (sigmoid, sigmoid_backward),
    "tanh": (tanh, tanh_backward),
}


def activate(Z: Array, activation: str) -> Array:
    """A = g(Z) for the named activation."""
    return ACTIVATIONS[activation][0](Z)


def activation_backward(dA: Array, Z: Array, activation: str) -> Array:
    """dZ = dA * g'(Z) for the named activation."""
    return ACTIVATIONS[activation][1](dA, Z)


# --- initialisation ------------------------------------------------------------------------------

INITIALIZATIONS = ("scaled", "xavier", "he")


def initialize(
    layer_dims: Sequence[int], seed: int, initialization: str = "scaled"
) -> list[tuple[Array, Array]]:
    """Weights and biases for every layer, [(W1, b1), ..., (WL, bL)].

    The generator is seeded once, then the layers are drawn in order, W before b, so a network
    initialised here equals the reference network drawn the same way:

        scaled: W = randn(n_l, n_prev) * 0.01
        xavier: W = randn(n_l, n_prev) / sqrt(n_prev)
        he:     W = randn(n_l, n_prev) * sqrt(2 / n_prev)
        b = zeros((n_l, 1))

    The generator is the run's own (`RandomState(seed)` draws what `np.random.seed(seed)` then
    `np.random.randn` draw, bit for bit), never numpy's global one: the local engine runs the
    Init of several runs at once in threads of one process, and draws from the shared global
    generator interleave there (one run's seed resets the other's draws half-way).
    """
    rng = np.random.RandomState(seed)
    params = []
    for n_prev, n in itertools.pairwise(layer_dims):
        W = rng.randn(n, n_prev)
        if initialization == "scaled":
            W = W * 0.01
        elif initialization == "xavier":
            W = W / np.sqrt(n_prev)
        elif initialization == "he":
            W = W * np.sqrt(2 / n_prev)
        else:
            raise ValueError(f"unknown initialization {initialization!r}")
        params.append((W, np.zeros((n, 1))))
    return params


# --- forward -------------------------------------------------------------------------------------


def linear_forward(W: Array, b: Array, A_prev: Array) -> Array:
    """Z = W . A_prev + b (for a whole layer, or for a shard of its neurons)."""
    return W.dot(A_prev) + b


def forward(params: Sequence[tuple[Array, Array]], activations: Sequence[str], X: Array) -> Array:
    """A[L] for the whole network, layer by layer (used to predict)."""
    return forward_output(params, activations, X)[1]


def forward_output(
    params: Sequence[tuple[Array, Array]], activations: Sequence[str], X: Array
) -> tuple[Array, Array]:
    """(Z[L], A[L]) for the whole network: the output layer's linear step too, from which a
    saturated output's cost is computed (see `cost`)."""
    A, Z = X, X
    for (W, b), g in zip(params, activations, strict=True):
        Z = linear_forward(W, b, A)
        A = activate(Z, g)
    return Z, A


# --- cost ----------------------------------------------------------------------------------------
#
# A sigmoid output is exactly 0 or 1 once |Z| passes about 37 (1 - A rounds to 0) or 745 (A
# underflows): a correct and very confident model. The textbook formulas then meet log(0) and
# 0 / 0, and give NaN for a model that is right. Each formula below is first computed as it is
# written, so that its bits are today's wherever it is finite; only its non-finite terms are
# replaced, by the cross-entropy computed from Z[L] (softplus, exact at any Z), or, without Z,
# from A clipped to the open interval (0, 1).

_TINY = np.finfo(np.float64).tiny  # the smallest A a clipped output takes
_BELOW_ONE = 1.0 - np.finfo(np.float64).epsneg  # the largest A below 1


def saturated(AL: Array) -> bool:
    """Whether an output is exactly 0 or 1, where the textbook cost is not finite: then the
    cost wants Z[L]."""
    return bool(np.any((AL == 0) | (AL == 1)))


def softplus(x: Array) -> Array:
    """log(1 + exp(x)), finite for every finite x: max(x, 0) + log1p(exp(-|x|))."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _terms(AL: Array, Y: Array) -> Array:
    """Each example's cross-entropy, as the textbook writes it: inf or NaN where A is 0 or 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.multiply(-np.log(AL), Y) + np.multiply(-np.log(1 - AL), 1 - Y)


def _stable_terms(AL: Array, Y: Array, ZL: Array | None) -> Array:
    """Each example's cross-entropy, finite: the textbook's where it is finite, elsewhere from
    Z[L] (-log(sigmoid(z)) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z)) or from A
    clipped into (0, 1)."""
    terms = _terms(AL, Y)
    bad = ~np.isfinite(terms)
    if ZL is not None:
        stable = Y * softplus(-ZL) + (1 - Y) * softplus(ZL)
    else:
        clipped = np.clip(AL, _TINY, _BELOW_ONE)
        stable = np.multiply(-np.log(clipped), Y) + np.multiply(-np.log(1 - clipped), 1 - Y)
    terms[bad] = stable[bad]
    return terms


def cost(AL: Array, Y: Array, ZL: Array | None = None) -> float:
    """Binary cross-entropy: -1/m * sum(Y log(AL) + (1 - Y) log(1 - AL)). Where an output is
    saturated (A exactly 0 or 1), the sum is of each example's finite cross-entropy, from ZL
    (Z[L]) if given (see the note above)."""
    m = Y.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (1.0 / m) * (-np.dot(Y, np.log(AL).T) - np.dot(1 - Y, np.log(1 - AL).T))
    if np.isfinite(c).all():
        return float(np.squeeze(c))
    return float((1.0 / m) * np.sum(_stable_terms(AL, Y, ZL)))


def summed_cost(AL: Array, Y: Array, ZL: Array | None = None) -> float:
    """The cross-entropy summed over the examples of a mini-batch: sum(-Y log(AL) - (1 - Y)
    log(1 - AL)). An epoch's cost is the sum of its batches' summed costs divided by m. Finite
    where an output is saturated, as `cost` is."""
    logprobs = _terms(AL, Y)
    if not np.isfinite(logprobs).all():
        logprobs = _stable_terms(AL, Y, ZL)
    return float(np.sum(logprobs))


def l2_cost(weights: Sequence[Array], l2: float, m: int) -> float:
    """L2 regularisation's share of the cost: (1/m) * (l2/2) * the sum of every weight squared,
    over the layers in order (m: the examples the cost is over)."""
    squares = sum(float(np.sum(np.square(W))) for W in weights)
    return (1.0 / m) * (l2 / 2) * squares


def cost_gradient(AL: Array, Y: Array) -> Array:
    """dA[L] = d cost / d A[L] = -(Y / AL - (1 - Y) / (1 - AL)). Where an output is saturated
    and right (A exactly equal to its label: 0 / 0), the same with A clipped into (0, 1): finite,
    and the sigmoid's derivative there, s (1 - s) = 0, makes dZ[L] = 0, the limit of the true
    dZ = A - Y. A saturated output that is wrong (A exactly 1 - Y: 1 / 0) has no finite dA[L]
    and a true dZ of +-1 that dA[L] cannot carry through s (1 - s) = 0: it stays infinite, and
    the Loss stage fails the run as diverged (it is reached only by a far too large learning
    rate)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        dAL = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))
    right = ~np.isfinite(dAL) & (AL == Y)
    if right.any():
        clipped = np.clip(AL, _TINY, _BELOW_ONE)
        dAL[right] = -(np.divide(Y, clipped) - np.divide(1 - Y, 1 - clipped))[right]
    return dAL


# --- backward ------------------------------------------------------------------------------------


def linear_backward(
    dZ: Array, A_prev: Array, W: Array, with_dA_prev: bool = True, l2: float = 0.0
) -> tuple[Array, Array, Array | None]:
    """Gradients of the linear step: dW = dZ . A_prev.T / m (+ (l2/m) W with L2
    regularisation), db = mean of dZ, dA_prev = W.T . dZ.

    For a shard of neurons, dA_prev is that shard's *partial* contribution; the full dA_prev is
    the sum of the partials of every shard of the layer (see `sum_partials`). The first layer's
    dA_prev would be the gradient of the images, which nothing reads: `with_dA_prev=False`
    skips it (None), the largest product of the backward pass on a wide input.
    """
    m = A_prev.shape[1]
    dW = 1.0 / m * np.dot(dZ, A_prev.T)
    if l2:
        dW = dW + (l2 / m) * W
    db = 1.0 / m * np.sum(dZ, axis=1, keepdims=True)
    dA_prev = np.dot(W.T, dZ) if with_dA_prev else None
    return dW, db, dA_prev


def sum_partials(partials: Iterable[Array]) -> Array:
    """dA[l-1] from the per-shard partials of layer l, added in shard order (a fixed order, so
    every engine gets the same bits for the same sharding): ((p0 + p1) + p2) + ... Each partial
    is added as it comes, so an iterator that reads them one by one holds two at a time, not
    all of them."""
    parts = iter(partials)
    total = next(parts)
    for p in parts:
        total = total + p
    return total


# --- update: gradient descent and its refinements ------------------------------------------------


def update(W: Array, b: Array, dW: Array, db: Array, learning_rate: float) -> tuple[Array, Array]:
    """One step of gradient descent."""
    return W - learning_rate * dW, b - learning_rate * db


def momentum(
    P: Array, dP: Array, v: Array, learning_rate: float, beta: float
) -> tuple[Array, Array]:
    """Gradient descent with momentum, for one parameter P (a W or a b) and its velocity v:
    v = beta v + (1 - beta) dP;  P = P - lr v.        Returns (P, v)."""
    v = beta * v + (1 - beta) * dP
    return P - learning_rate * v, v


def rmsprop(
    P: Array, dP: Array, s: Array, learning_rate: float, beta: float, epsilon: float
) -> tuple[Array, Array]:
    """RMSprop: s = beta s + (1 - beta) dP^2;  P = P - lr dP / (sqrt(s) + epsilon).
    Returns (P, s)."""
    s = beta * s + (1 - beta) * np.power(dP, 2)
    return P - learning_rate * dP / (np.sqrt(s) + epsilon), s


def adam(
    P: Array,
    dP: Array,
    v: Array,
    s: Array,
    t: int,
    learning_rate: float,
    beta1: float,
    beta2: float,
    epsilon: float,
) -> tuple[Array, Array, Array]:
    """Adam, at update step t (counted from 1):
    v = beta1 v + (1 - beta1) dP;    v_hat = v / (1 - beta1^t)
    s = beta2 s + (1 - beta2) dP^2;  s_hat = s / (1 - beta2^t)
    P = P - lr v_hat / (sqrt(s_hat) + epsilon).       Returns (P, v, s)."""
    v = beta1 * v + (1 - beta1) * dP
    v_hat = v / (1 - beta1**t)
    s = beta2 * s + (1 - beta2) * np.power(dP, 2)
    s_hat = s / (1 - beta2**t)
    return P - learning_rate * v_hat / (np.sqrt(s_hat) + epsilon), v, s


def decayed_learning_rate(learning_rate: float, rate: float, every: int, epoch: int) -> float:
    """The learning rate of an epoch under scheduled decay: lr / (1 + rate floor(epoch / every))."""
    return learning_rate / (1 + rate * np.floor(epoch / every))


# --- mini-batches --------------------------------------------------------------------------------


def held_out(m: int, fraction: float) -> int:
    """How many of m examples a split of `fraction` holds out: round(fraction m), at least one
    and at most m - 1."""
    return min(m - 1, max(1, round(fraction * m)))


def validation_split(m: int, fraction: float, seed: int) -> tuple[Array, Array]:
    """(training columns, validation columns) of m examples: `held_out` of them, drawn by a
    permutation from numpy's legacy generator seeded with `seed`, held out; both kept in their
    original order."""
    held = held_out(m, fraction)
    order = np.random.RandomState(seed).permutation(m)
    return np.sort(order[held:]), np.sort(order[:held])


def batch_columns(m: int, batch_size: int, seed: int) -> list[Array]:
    """The examples of each mini-batch of an epoch, as column indices: a permutation of 0..m-1
    from numpy's legacy generator seeded with `seed`, cut in order into batches of batch_size
    (the last one smaller when m is not a multiple)."""
    order = np.random.RandomState(seed).permutation(m)
    return [order[k : k + batch_size] for k in range(0, m, batch_size)]


# --- prediction ----------------------------------------------------------------------------------


def predict(AL: Array) -> Array:
    """Labels 0/1 from the output probabilities: 1 where A[L] > 0.5."""
    return (AL > 0.5).astype(np.int64)


def accuracy(AL: Array, Y: Array) -> float:
    return float(np.mean(predict(AL) == Y))
