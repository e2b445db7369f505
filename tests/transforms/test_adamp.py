"""What the generic suites cannot express about timm's AdamP: its record has no `complex` (a
complex matrix is refused, torch's real-only cosine similarity), but timm steps complex vectors
and scalars as complex numbers (g^2 and its root complex), and so do we."""

import jax
import jax.numpy as jnp
import numpy as np
import torch

import optax_like as ol
from optax_like import registry


def test_complex_vectors_step_as_complex_numbers_like_timm(x64):
    info = registry.OPTIMIZERS["adamp"]
    rng = np.random.default_rng(0)
    shapes = [(5,), ()]
    draw = lambda s: (rng.standard_normal(s) + 1j * rng.standard_normal(s)).astype(np.complex128)  # noqa: E731
    init = [draw(s) for s in shapes]
    grads = [[draw(s) for s in shapes] for _ in range(8)]
    kwargs = dict(lr=1e-2, weight_decay=0.1, nesterov=True)
    tp = [torch.tensor(p).requires_grad_() for p in init]
    opt = info.reference_class()(tp, **kwargs)
    tx = info.factory(**kwargs)
    params = [jnp.asarray(p) for p in init]
    state = tx.init(params)
    step = jax.jit(lambda g, s, p: (lambda u, s: (ol.apply_updates(p, u), s))(*tx.update(g, s, p)))
    for g in grads:
        for p, x in zip(tp, g):
            p.grad = torch.tensor(x)
        opt.step()
        params, state = step([jnp.asarray(x) for x in g], state, params)
        for a, b in zip(params, tp):
            np.testing.assert_allclose(np.asarray(a), b.detach().numpy(), rtol=1e-12, atol=1e-12)
