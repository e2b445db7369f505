"""The parity harness: run a torch optimizer and an optax_like optimizer side by side.

Both start from the same params and receive the same gradients (drawn once, in NumPy); params
are compared after every step. Tolerances are the project's targets:

- float64: |jax - torch| <= 1e-12 * (|torch| + 1) after every step;
- float32: |jax - torch| <= 1e-6 * (|torch| + 1) (a few ulps of drift over 50 steps).

The `+ 1` floor keeps an element that passes through zero from turning one ulp of the
other elements' scale into a huge relative error.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import torch

import optax_like as ol

TOLERANCE = {"float64": 1e-12, "float32": 1e-6}


def torch_float32_sqrt_is_correctly_rounded() -> bool:
    """Whether this machine's torch computes float32 `sqrt` correctly rounded (IEEE). Its CPU
    kernels are chosen per CPU: on an AMD EPYC host (AVX512 path) 34 of 199 values `1 - 0.999**k`
    came out one ulp off NumPy's (and XLA's) correctly rounded root; on the Intel hosts of
    earlier runs none did. Where torch's float64 step takes a float32 square root (Adam's
    differentiable path: `bias_correction2.sqrt()` of the float32 `step`), that ulp is torch's,
    and its float64 params carry it (~1e-9 relative): tests then allow it
    (`FLOAT32_SQRT_ULP`), and say so."""
    x = (np.float32(1) - np.float32(0.999) ** np.arange(1, 400, dtype=np.float32)).astype(np.float32)
    x = np.concatenate([x, np.random.default_rng(0).uniform(1e-6, 4.0, 400).astype(np.float32)])
    return bool(np.array_equal(torch.from_numpy(x).sqrt().numpy(), np.sqrt(x)))


TORCH_SQRT32_EXACT = torch_float32_sqrt_is_correctly_rounded()
# float64 results that went through one of torch's float32 square roots: 1e-12 where torch's is
# correctly rounded, else its one-ulp (6e-8) error as the step and its derivatives carry it
# (measured on the AMD EPYC host: 25 steps' params 2.1e-9, the loss after 8 steps at lr 0.05 4.0e-8
# relative, its hypergradients likewise: about one float32 ulp, 6e-8, of a bias correction)
FLOAT32_SQRT_ULP = ({"params": 1e-12, "loss": 1e-12, "derivatives": 1e-10} if TORCH_SQRT32_EXACT
                    else {"params": 1e-8, "loss": 2e-7, "derivatives": 2e-7})
DEFAULT_SHAPES = ((4, 3), (5,), ())


def make_problem(dtype: str, shapes: Sequence[tuple] = DEFAULT_SHAPES, steps: int = 50, seed: int = 0,
                 complex_params: bool = False):
    """Initial params and a list of per-step gradients, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    np_dtype = np.dtype(dtype)

    def draw(shape):
        x = rng.standard_normal(shape).astype(np_dtype)
        if complex_params:
            x = (x + 1j * rng.standard_normal(shape).astype(np_dtype)).astype(
                np.complex128 if np_dtype == np.float64 else np.complex64
            )
        return x

    params = [draw(s) for s in shapes]
    grads = [[draw(s) for s in shapes] for _ in range(steps)]
    return params, grads


def jit_step(tx: ol.GradientTransformation) -> Callable:
    def step(grads, state, params):
        updates, state = tx.update(grads, state, params)
        return ol.apply_updates(params, updates), state

    return jax.jit(step)


def assert_close(jax_params, torch_params, dtype: str, step: int, rtol: float | None = None):
    rtol = TOLERANCE[dtype] if rtol is None else rtol
    for i, (a, b) in enumerate(zip(jax_params, torch_params)):
        a = np.asarray(a)
        b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
        assert a.dtype == b.dtype, f"param {i}: dtype {a.dtype} != torch's {b.dtype}"
        err = np.abs(a - b) / (np.abs(b) + 1.0)
        worst = float(np.max(err)) if err.size else 0.0
        assert worst <= rtol, f"step {step}, param {i}: relative error {worst:.3e} > {rtol:.0e}"


def run_parity(
    torch_cls,
    torch_kwargs: dict,
    tx: ol.GradientTransformation,
    dtype: str,
    *,
    shapes: Sequence[tuple] = DEFAULT_SHAPES,
    steps: int = 50,
    seed: int = 0,
    rtol: float | None = None,
    complex_params: bool = False,
    check_every_step: bool = True,
):
    """Steps both optimizers `steps` times on the same gradients and compares params.

    Returns (jax_params, jax_state, torch_params, torch_optimizer) for further checks.
    """
    params_np, grads_np = make_problem(dtype, shapes, steps, seed, complex_params)
    torch_params = [torch.tensor(p, requires_grad=True) for p in params_np]
    kwargs = dict(torch_kwargs)
    if "foreach" in torch_cls.__init__.__code__.co_varnames:
        kwargs.setdefault("foreach", False)  # torch's reference (single-tensor) path
    torch_opt = torch_cls(torch_params, **kwargs)

    params = [jnp.asarray(p) for p in params_np]
    state = tx.init(params)
    step = jit_step(tx)
    for t in range(steps):
        for p, g in zip(torch_params, grads_np[t]):
            p.grad = torch.tensor(g)
        torch_opt.step()
        params, state = step([jnp.asarray(g) for g in grads_np[t]], state, params)
        if check_every_step or t == steps - 1:
            assert_close(params, torch_params, dtype, t + 1, rtol)
    return params, state, torch_params, torch_opt


def jax_grad(g, shape):
    """A test gradient for our side: None, a dense array, or `(rows, values)` as a row-sparse
    BCOO (torch's sparse COO gradient of SparseAdam)."""
    from jax.experimental import sparse as jsparse

    if g is None:
        return None
    if isinstance(g, tuple):
        idx, vals = g
        return jsparse.BCOO((jnp.asarray(vals), jnp.asarray(idx[:, None].astype(np.int32))), shape=tuple(shape))
    return jnp.asarray(g)


def assert_single_param_trajectory_is_torchs(torch_opt, torch_p, tx, p0, grads, check=None) -> None:
    """Steps torch and `tx` on one param with the same gradients (nan/inf included); params
    bit-identical after every step; `check(state)` for extra per-step comparisons."""
    p, state = jnp.asarray(p0), tx.init(jnp.asarray(p0))
    step = jax.jit(lambda g, s, p: tx.update(g, s, p))
    for g in grads:
        torch_p.grad = torch.tensor(np.asarray(g))
        torch_opt.step()
        u, state = step(jnp.asarray(g), state, p)
        p = ol.apply_updates(p, u)
        np.testing.assert_array_equal(np.asarray(p), torch_p.detach().numpy())
        if check is not None:
            check(state)

