import jax.numpy as jnp
import numpy as np
import torch

import optax_like as ol


def test_clip_by_global_norm_matches_torch_clip_grad_norm():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    for max_norm in (0.5, 100.0):
        tensors = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_(tensors, max_norm)
        tx = ol.clip_by_global_norm(max_norm)
        out, _ = tx.update([jnp.asarray(g) for g in grads], tx.init(None))
        for o, t in zip(out, tensors):
            np.testing.assert_allclose(o, t.grad.numpy(), rtol=1e-6)


def test_clip_is_elementwise_like_clip_grad_value():
    tx = ol.clip(0.5)
    out, _ = tx.update({"w": jnp.asarray([-2.0, 0.1, 3.0])}, tx.init(None))
    np.testing.assert_array_equal(out["w"], np.asarray([-0.5, 0.1, 0.5], np.float32))
