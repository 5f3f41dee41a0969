"""The maths of learning beyond full-batch gradient descent (snn.network): L2's gradient against
central differences, each optimizer's step against one computed by hand, learning-rate decay,
mini-batches cut as the course cuts them, and the validation split."""

from __future__ import annotations

import numpy as np
import pytest

from snn import network as nn
from snn.data import synthetic_dataset
from snn.stages.context import Context, Run, Step
from snn.stores import MemoryRunTable, MemoryStore
from tests.helpers import analytic_gradients, flat, network, numerical_gradients


@pytest.mark.parametrize("l2", [0.7, 5.0])
def test_l2_gradients_match_central_differences(l2: float) -> None:
    ds = synthetic_dataset(n_x=5, m_train=16, m_test=1, seed=2)
    params = [
        (W, np.full_like(b, 0.1))
        for W, b in nn.initialize([5, 4, 3, 1], seed=3, initialization="xavier")
    ]
    activations = ["tanh", "tanh", "sigmoid"]
    numeric = flat(numerical_gradients(params, activations, ds.train_x, ds.train_y, l2=l2))
    analytic = flat(analytic_gradients(params, activations, ds.train_x, ds.train_y, l2=l2))
    plain = flat(analytic_gradients(params, activations, ds.train_x, ds.train_y))
    difference = np.linalg.norm(numeric - analytic) / (
        np.linalg.norm(numeric) + np.linalg.norm(analytic)
    )
    assert difference < 1e-7, f"relative difference {difference:.3e}"
    # and L2 is really in there: without it the gradients are off by far more
    assert np.linalg.norm(numeric - plain) / np.linalg.norm(numeric) > 1e-3


def test_l2_cost_by_hand() -> None:
    W1, W2 = np.array([[1.0, -2.0]]), np.array([[3.0], [0.5]])
    # (1 / m) (l2 / 2) (1 + 4 + 9 + 0.25) with m = 4, l2 = 0.5
    assert nn.l2_cost([W1, W2], 0.5, 4) == pytest.approx(14.25 * 0.5 / 2 / 4, rel=1e-15)
    assert nn.l2_cost([W1, W2], 0.0, 4) == 0.0


def test_summed_cost_is_m_times_the_cost() -> None:
    rng = np.random.default_rng(0)
    AL = rng.uniform(0.05, 0.95, size=(1, 37))
    Y = (rng.uniform(size=(1, 37)) > 0.5).astype(float)
    assert nn.summed_cost(AL, Y) == pytest.approx(37 * nn.cost(AL, Y), rel=1e-13)


P = np.array([[0.5, -1.0], [2.0, 0.25]])
DP = np.array([[0.1, -0.2], [0.3, 0.0]])


def test_momentum_step_by_hand() -> None:
    v0 = np.array([[0.01, 0.02], [-0.03, 0.04]])
    P1, v1 = nn.momentum(P, DP, v0, learning_rate=0.1, beta=0.9)
    expected_v = np.array([[0.9 * 0.01 + 0.1 * 0.1, 0.9 * 0.02 + 0.1 * -0.2],
                           [0.9 * -0.03 + 0.1 * 0.3, 0.9 * 0.04 + 0.1 * 0.0]])  # fmt: skip
    assert np.allclose(v1, expected_v, rtol=1e-12, atol=0)
    assert np.allclose(P1, P - 0.1 * expected_v, rtol=1e-12, atol=0)


def test_rmsprop_step_by_hand() -> None:
    s0 = np.full((2, 2), 0.5)
    P1, s1 = nn.rmsprop(P, DP, s0, learning_rate=0.01, beta=0.999, epsilon=1e-8)
    expected_s = 0.999 * 0.5 + 0.001 * DP**2
    assert np.allclose(s1, expected_s, rtol=1e-12, atol=0)
    assert P1[0, 0] == pytest.approx(
        0.5 - 0.01 * 0.1 / (np.sqrt(0.999 * 0.5 + 0.001 * 0.01) + 1e-8)
    )
    assert P1[1, 1] == P[1, 1]  # a zero gradient moves nothing


def test_adam_steps_by_hand() -> None:
    """Two steps from zero state: t counts from 1 and the bias correction uses it."""
    zeros = np.zeros_like(P)
    P1, v1, s1 = nn.adam(P, DP, zeros, zeros, 1, 0.01, 0.9, 0.999, 1e-8)
    # at t = 1 the corrected moments are the gradient and its square: a step of lr sign(g)
    # (epsilon makes it shorter by about epsilon / |g|, 1e-7 here)
    assert np.allclose(P1[0], [0.5 - 0.01, -1.0 + 0.01], rtol=1e-8, atol=0)
    assert P1[1, 1] == P[1, 1]
    P2, v2, s2 = nn.adam(P1, DP, v1, s1, 2, 0.01, 0.9, 0.999, 1e-8)
    v_hat = (0.9 * 0.1 * 0.1 + 0.1 * 0.1) / (1 - 0.9**2)  # entry (0, 0)
    s_hat = (0.999 * 0.001 * 0.01 + 0.001 * 0.01) / (1 - 0.999**2)
    assert P2[0, 0] == pytest.approx(P1[0, 0] - 0.01 * v_hat / (np.sqrt(s_hat) + 1e-8), rel=1e-12)
    assert np.allclose(v2, 0.9 * v1 + 0.1 * DP, rtol=1e-12, atol=0)
    assert np.allclose(s2, 0.999 * s1 + 0.001 * DP**2, rtol=1e-12, atol=0)


def test_learning_rate_decay_is_scheduled() -> None:
    rates = [nn.decayed_learning_rate(0.1, 1.0, 10, e) for e in (0, 9, 10, 25, 30)]
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.1 / 3, 0.025])


def test_mini_batches_are_the_courses() -> None:
    """A permutation from np.random.seed(seed); np.random.permutation(m), cut in order: the
    scheme of the course whose results the mini-batch runs reproduce."""
    np.random.seed(11)
    permutation = list(np.random.permutation(23))
    batches = nn.batch_columns(23, 5, 11)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert [int(i) for b in batches for i in b] == permutation


def test_the_validation_split_is_seeded_and_disjoint() -> None:
    train, valid = nn.validation_split(209, 0.2, 10)
    assert (len(train), len(valid)) == (167, 42)
    assert sorted([*train, *valid]) == list(range(209))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(valid) > 0)  # original order
    again = nn.validation_split(209, 0.2, 10)
    assert np.array_equal(again[1], valid)
    assert not np.array_equal(nn.validation_split(209, 0.2, 11)[1], valid)
    assert [len(part) for part in nn.validation_split(3, 0.01, 0)] == [2, 1]  # at least one


def test_a_mini_batch_is_used_as_cut_even_if_another_run_clears_the_cache_meanwhile() -> None:
    """Stages of several runs share one Context in threads of one process (the local engine):
    another run's stage may clear the cut mini-batches between this one's write and its read."""

    class ClearedMeanwhile(dict):
        def __setitem__(self, key: object, value: object) -> None:
            super().__setitem__(key, value)
            self.clear()  # another run's stage, in another thread, at this very moment

    p = network([2, 1], batch_size=5)
    ctx = Context(MemoryStore(), MemoryRunTable(), _batches=ClearedMeanwhile())
    step = Step(Run("r", p, 23, 5), 0, 4)
    expected = nn.batch_columns(23, 5, p.training.shuffle_seed + 1)[4]
    assert np.array_equal(ctx.columns(step), expected)
