"""`differentiable=True` (Adam, AdamW, NAdam) against torch's differentiable path.

torch's differentiable path forms its scalars from float32 tensors (Adam: the bias corrections
from the float32 `step`; NAdam: the coefficients from the float32 `mu_product`) and differs
from its default path by 2e-10..6e-7 in float64; ours reproduces it. Differentiating through
`update` (w.r.t. the lr and the params) matches torch's autograd through the same steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from tests.parity.harness import FLOAT32_SQRT_ULP, TOLERANCE, jit_step, make_problem

OPTIMIZERS = {"Adam": ol.adam, "AdamW": ol.adamw, "NAdam": ol.nadam}
CONFIGS = [
    ("Adam", dict(lr=1e-3)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, maximize=True)),
    ("Adam", dict(lr=torch.tensor(0.01))),
    ("AdamW", dict(lr=0.02, weight_decay=0.1)),
    ("NAdam", dict(lr=2e-3)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, momentum_decay=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("NAdam", dict(lr=torch.tensor(0.01))),
]


def ours(kwargs: dict) -> dict:
    """torch kwargs -> ours: a Tensor lr becomes an array of its dtype (torch keeps its dtype)."""
    return {k: (jnp.asarray(v.numpy()) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}


def worst_error(name: str, kwargs: dict, tx, dtype: str, steps: int = 25) -> float:
    """Largest |ours - torch| / (|torch| + 1) over `steps` steps against torch's differentiable path."""
    params_np, grads_np = make_problem(dtype, steps=steps)
    torch_params = [torch.tensor(p) for p in params_np]  # no requires_grad: the step is not under no_grad
    torch_opt = getattr(torch.optim, name)(torch_params, **kwargs, differentiable=True, foreach=False)
    params = [jnp.asarray(p) for p in params_np]
    state, step = tx.init(params), jit_step(tx)
    worst = 0.0
    for t in range(steps):
        for p, g in zip(torch_params, grads_np[t]):
            p.grad = torch.tensor(g)
        torch_opt.step()
        params, state = step([jnp.asarray(g) for g in grads_np[t]], state, params)
        for a, b in zip(params, torch_params):
            assert np.asarray(a).dtype == b.numpy().dtype
            worst = max(worst, float(np.max(np.abs(np.asarray(a) - b.numpy()) / (np.abs(b.numpy()) + 1))))
    return worst


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=str)
def test_differentiable_path_matches_torchs(name, kwargs, parity_dtype):
    """float64 within 1e-12, or within torch's float32 `sqrt` ulp where this machine's torch does
    not round it correctly (Adam's `bias_correction2.sqrt()`; tests/parity/harness.py)."""
    tx = OPTIMIZERS[name](**ours(kwargs), differentiable=True)
    tolerance = TOLERANCE[parity_dtype]
    if parity_dtype == "float64" and name != "NAdam":
        tolerance = max(tolerance, FLOAT32_SQRT_ULP["params"])
    assert worst_error(name, kwargs, tx, parity_dtype) <= tolerance


@pytest.mark.parametrize("name,kwargs", [CONFIGS[1], CONFIGS[6]], ids=str)
def test_default_path_is_not_torchs_differentiable_path(name, kwargs, x64):
    """The switch matters: the default path is measurably off torch's differentiable one."""
    assert worst_error(name, kwargs, OPTIMIZERS[name](**ours(kwargs)), "float64") > 1e-10


A = np.linspace(0.5, 2.0, 5)
B = np.array([0.3, -1.0, 0.7, 2.0, -0.4])
P0 = np.array([1.0, -0.5, 0.25, 1.5, -2.0])
STEPS = 8


def torch_loss_and_grads(name: str, kwargs: dict, lr0: float):
    """torch's autograd through STEPS differentiable steps of a quadratic: d loss / d (lr, p0)."""
    lr = torch.tensor(lr0, dtype=torch.float64, requires_grad=True)
    p0 = torch.tensor(P0, requires_grad=True)
    a, b = torch.tensor(A), torch.tensor(B)
    p, state = p0 * 1, {}
    for _ in range(STEPS):
        grad = a * p - b
        p = p.clone()  # as torch's own differentiable tests: a fresh param and state copies per step
        p.grad = grad
        opt = getattr(torch.optim, name)([p], lr=lr, differentiable=True, foreach=False, **kwargs)
        opt.state[p].update({k: v.clone() for k, v in state.items()})
        opt.step()
        state = dict(opt.state[p])
    loss = 0.5 * (a * p * p).sum() - (b * p).sum()
    loss.backward()
    return loss.item(), lr.grad.item(), p0.grad.numpy()


@pytest.mark.parametrize("name,kwargs", [
    ("Adam", {}), ("Adam", dict(amsgrad=True, weight_decay=0.1)), ("AdamW", {}),
    ("NAdam", {}), ("NAdam", dict(weight_decay=0.1, decoupled_weight_decay=True)),
], ids=str)
def test_hypergradient_through_steps_matches_torch_autograd(name, kwargs, x64):
    def loss_after_steps(lr, p):
        tx = OPTIMIZERS[name](lr, differentiable=True, **kwargs)
        state = tx.init(p)
        for _ in range(STEPS):
            updates, state = tx.update(A * p - B, state, p)
            p = ol.apply_updates(p, updates)
        return 0.5 * jnp.sum(A * p * p) - jnp.sum(B * p)

    loss, (d_lr, d_p0) = jax.value_and_grad(loss_after_steps, argnums=(0, 1))(0.05, jnp.asarray(P0))
    torch_loss, torch_d_lr, torch_d_p0 = torch_loss_and_grads(name, kwargs, 0.05)
    # Adam's: torch's float32 `sqrt` of the bias correction, where this machine's torch rounds it
    # otherwise than IEEE (tests/parity/harness.py); NAdam takes no float32 root
    tol = {"loss": 1e-12, "derivatives": 1e-10} if name == "NAdam" else FLOAT32_SQRT_ULP
    np.testing.assert_allclose(float(loss), torch_loss, rtol=tol["loss"])
    np.testing.assert_allclose(float(d_lr), torch_d_lr, rtol=tol["derivatives"])
    np.testing.assert_allclose(np.asarray(d_p0), torch_d_p0, rtol=tol["derivatives"], atol=1e-12)


def test_float32_scalars_round_like_torch_tensors(x64):
    """The float32 scalar helpers give torch's float32 tensor results under jit: the product
    survives XLA:CPU's multiply-add contraction (`1 - p * m` here is a rounding tie where the
    contracted form lands on the other float32), and `1 - beta ** step` is torch's."""
    from optax_like.transforms.moments import float32_step_bias_correction
    from optax_like.core.numerics import float32_product

    p, m = np.float32(0.4500734806060791), 0.9 * (1 - 0.5 * 0.96 ** (2 * 4e-3))
    torch_value = (1 - torch.tensor(p) * m).item()
    assert float(jax.jit(lambda p, m: 1 - float32_product(p, m))(jnp.float32(p), m)) == torch_value
    steps = np.arange(1, 2000, 37)
    torch_bc = (1 - 0.999 ** torch.tensor(steps, dtype=torch.float32)).numpy()
    ours = jax.jit(jax.vmap(lambda t: float32_step_bias_correction(0.999, t)))(jnp.asarray(steps))
    np.testing.assert_array_equal(np.asarray(ours), torch_bc)
