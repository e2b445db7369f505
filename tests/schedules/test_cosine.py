"""CosineAnnealingLR at counts and periods beyond int32 (optax's `decay_steps=int(1e10)`)."""

import math

import jax
import numpy as np
import pytest

import optax_like.schedules as S


@pytest.mark.parametrize("T_max", [2**30, 2**31 - 1, 2**31, 10**10])
def test_cosine_annealing_lr_with_a_period_beyond_int32(T_max):
    schedule = S.cosine_annealing_lr(1000.0, T_max=T_max)
    for count in (0, 10**9, 2**31 - 1):
        expected = 1000.0 * (1 + math.cos(math.pi * (count % (2 * T_max)) / T_max)) / 2
        np.testing.assert_allclose(schedule(count), expected, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(jax.jit(schedule)(count), expected, rtol=1e-5, atol=1e-3)


def test_chained_cosine_with_a_period_beyond_int32():
    chained = S.chained_scheduler([S.cosine_annealing_lr(1.0, T_max=10**10), S.exponential_lr(1.0, 0.5)])
    np.testing.assert_allclose(jax.jit(chained)(3), 0.125, rtol=1e-6)
