"""optax_like.sparse_adam against torch.optim.SparseAdam with real torch sparse gradients.

The harness's dense gradients do not fit (SparseAdam rejects them), so this file steps both
optimizers itself: every step draws COO gradients with duplicate indices, hands torch a
`torch.sparse_coo_tensor` and optax_like the same entries as a BCOO or a RowSparseGrad.
"""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.experimental import sparse as jsparse

import optax_like as ol
from tests.parity.harness import assert_close, jit_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# (param shape, number of sparse leading axes, form of the jax gradient). Hybrid (row) and
# fully sparse layouts, each given both as a BCOO and as a RowSparseGrad.
LAYOUT = (
    ((10, 4), 1, "rows"),
    ((8, 3), 1, "bcoo"),
    ((6, 5), 2, "bcoo"),
    ((5, 4), 2, "rows"),
    ((7,), 1, "bcoo"),
)
NNZ = 6


def draw_grads(dtype, steps, seed=0, none_every=0):
    """Per step, per param: (indices (k, nnz), values (nnz, *dense)) or None, with duplicates."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(steps):
        step = []
        for i, (shape, k, _) in enumerate(LAYOUT):
            if none_every and i in (0, 2) and t % none_every == 1:
                step.append(None)
                continue
            idx = np.stack([rng.integers(0, shape[a], NNZ) for a in range(k)])
            idx[:, -1] = idx[:, 0]  # at least one duplicate entry every step
            vals = rng.standard_normal((NNZ, *shape[k:])).astype(dtype)
            step.append((idx, vals))
        out.append(step)
    return out


def to_jax(entry, shape, form):
    if entry is None:
        return None
    idx, vals = entry
    if form == "bcoo":
        return jsparse.BCOO((jnp.asarray(vals), jnp.asarray(idx.T.astype(np.int32))), shape=shape)
    indices = idx[0] if idx.shape[0] == 1 else idx.T
    return ol.RowSparseGrad(jnp.asarray(indices.astype(np.int32)), jnp.asarray(vals))


def to_torch(entry, shape):
    if entry is None:
        return None
    idx, vals = entry
    return torch.sparse_coo_tensor(torch.tensor(idx), torch.tensor(vals), shape)


def run_sparse_parity(config, dtype, steps=50, none_every=0, rtol=None):
    rng = np.random.default_rng(1)
    params_np = [rng.standard_normal(shape).astype(dtype) for shape, _, _ in LAYOUT]
    grads = draw_grads(dtype, steps, none_every=none_every)
    torch_params = [torch.tensor(p, requires_grad=True) for p in params_np]
    torch_opt = torch.optim.SparseAdam(torch_params, **config)
    jax_config = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in config.items()}
    if isinstance(config.get("lr"), torch.Tensor):
        # torch's Tensor lr keeps its own dtype (float32 here, also for float64 params): torch
        # rounds `step_size = lr * sqrt(bc2) / bc1` in it (2.75e-10 off in float64 otherwise).
        jax_config["lr"] = jnp.asarray(config["lr"].numpy())
    tx = ol.sparse_adam(**jax_config)
    params = [jnp.asarray(p) for p in params_np]
    state = ol.per_leaf_scalars(tx.init(params)) if none_every else tx.init(params)  # None gradients ahead
    step = jit_step(tx)
    for t in range(steps):
        for p, entry, (shape, _, _) in zip(torch_params, grads[t], LAYOUT):
            p.grad = to_torch(entry, shape)
        torch_opt.step()
        jax_grads = [to_jax(e, shape, form) for e, (shape, _, form) in zip(grads[t], LAYOUT)]
        params, state = step(jax_grads, state, params)
        assert_close(params, torch_params, dtype, t + 1, rtol)
    inner = state[0]
    for i, p in enumerate(torch_params):
        st = torch_opt.state[p]
        assert_close([inner.exp_avg[i], inner.exp_avg_sq[i]], [st["exp_avg"], st["exp_avg_sq"]], dtype, steps, rtol)
        assert int(inner.step[i]) == st["step"]
    return step


CONFIGS = [
    dict(),
    dict(lr=torch.tensor(0.01)),
    dict(lr=torch.tensor(0.001), maximize=True),
    dict(lr=0.01, maximize=True),
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, betas=(0.0, 0.0)),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_sparse_adam_matches_torch(config, parity_dtype):
    # A tensor lr makes torch form `step_size = lr * sqrt(bc2) / bc1` as a float32 tensor (the
    # lr's dtype), so torch's float64 run carries a float32-rounded step size: so does ours.
    step = run_sparse_parity(config, parity_dtype)
    assert step._cache_size() == 1  # fixed nnz: one compilation for all 50 steps


def test_sparse_adam_skips_params_without_gradient_like_torch(x64):
    run_sparse_parity(dict(lr=0.01), "float64", steps=12, none_every=3)


def test_sparse_adam_empty_gradient_counts_a_step_like_torch():
    p = torch.ones(4, 2, requires_grad=True)
    opt = torch.optim.SparseAdam([p], lr=0.1)
    p.grad = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.long), torch.zeros(0, 2), (4, 2))
    opt.step()
    tx = ol.sparse_adam(lr=0.1)
    params = [jnp.ones((4, 2))]
    state = tx.init(params)
    updates, state = tx.update([ol.RowSparseGrad(jnp.zeros((0,), jnp.int32), jnp.zeros((0, 2)))], state, params)
    new = ol.apply_updates(params, updates)
    np.testing.assert_array_equal(np.asarray(new[0]), p.detach().numpy())
    assert int(state[0].step[0]) == opt.state[p]["step"] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(lr=0.0), "Invalid learning rate: 0.0"),
        (dict(eps=0.0), "Invalid epsilon value: 0.0"),
        (dict(lr=1e-2, betas=(1.0, 0.0)), "Invalid beta parameter at index 0: 1.0"),
        (dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
    ],
)
def test_sparse_adam_rejects_what_torch_rejects(kwargs, message):
    with pytest.raises(ValueError) as torch_error:
        torch.optim.SparseAdam([torch.zeros(1, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError) as ours:
        ol.sparse_adam(**kwargs)
    assert str(ours.value) == str(torch_error.value) == message


def test_sparse_adam_tensor_lr_must_be_one_element():
    with pytest.raises(ValueError) as torch_error:
        torch.optim.SparseAdam([torch.zeros(1, requires_grad=True)], lr=torch.tensor([1e-3, 1e-3]))
    with pytest.raises(ValueError) as ours:
        ol.sparse_adam(lr=jnp.array([1e-3, 1e-3]))
    assert str(ours.value) == str(torch_error.value)


def test_sparse_adam_rejects_dense_gradients_like_torch():
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.ones(3)
    opt = torch.optim.SparseAdam([p])
    with pytest.raises(RuntimeError) as torch_error:
        opt.step()
    tx = ol.sparse_adam()
    state = tx.init([jnp.zeros(3)])
    with pytest.raises(RuntimeError) as ours:
        tx.update([jnp.ones(3)], state, [jnp.zeros(3)])
    assert str(ours.value) == str(torch_error.value)


def test_sparse_adam_rejects_sparse_params_like_torch():
    with pytest.raises(ValueError) as torch_error:
        torch.optim.SparseAdam([torch.zeros(3, layout=torch.sparse_coo)])
    with pytest.raises(ValueError) as ours:
        ol.sparse_adam().init([jsparse.BCOO.fromdense(jnp.zeros(3))])
    assert str(ours.value) == str(torch_error.value)
