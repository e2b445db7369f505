"""Unit tests of optax_like.lbfgs: jit, pytrees, the `grads`/`value` contract, the line search, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim.lbfgs import _cubic_interpolate, _strong_wolfe

import optax_like as ol
from optax_like.optimizers.lbfgs import PARAM_GROUPS_ERROR, LBFGSState
from optax_like.transforms.line_search import cubic_interpolate, strong_wolfe


def _quartic(params, scale=1.0):
    """A smooth non-quadratic loss on a nested tree (None leaves are ignored)."""
    a = params["a"]
    w, z = params["pair"]
    return scale * (jnp.sum((a - 1.0) ** 2) + jnp.sum(w**4) + 0.5 * jnp.sum((w - 0.3) ** 2) + jnp.sum(jnp.abs(z) ** 2 - z.real))


def _tree(dtype=jnp.float64):
    ctype = jnp.complex128 if dtype == jnp.float64 else jnp.complex64
    return {
        "a": jnp.asarray([[0.5, -1.0], [2.0, 0.0]], dtype),
        "frozen": None,
        "pair": (jnp.asarray([1.0, -0.5, 0.25], dtype), jnp.asarray([1 + 1j, -0.5j], ctype)),
    }


def test_state_has_torchs_keys():
    state = ol.lbfgs(history_size=4).init({"x": jnp.zeros(3)})
    for key in ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss", "n_iter", "func_evals", "al"):
        assert key in LBFGSState._fields
    assert state.old_dirs.shape == (4, 3) and state.al.shape == (4,)
    assert int(state.n_iter) == 0 and int(state.func_evals) == 0


def test_pytree_with_none_and_complex_leaves_matches_torch(x64):
    """Nested dict/tuple params, a frozen (None) leaf and a complex leaf (torch's view_as_real)."""
    params = _tree()
    tx = ol.lbfgs(history_size=5, line_search_fn="strong_wolfe", max_iter=6)
    state = tx.init(params)
    step = jax.jit(lambda p, s, scale: tx.update(None, s, p, value_fn=_quartic, scale=scale))

    tp = [torch.tensor(np.asarray(params["a"]), requires_grad=True),
          torch.tensor(np.asarray(params["pair"][0]), requires_grad=True),
          torch.tensor(np.asarray(params["pair"][1]), requires_grad=True)]
    opt = torch.optim.LBFGS(tp, history_size=5, line_search_fn="strong_wolfe", max_iter=6)

    def closure():
        opt.zero_grad()
        a, w, z = tp
        loss = 2.0 * (((a - 1.0) ** 2).sum() + (w**4).sum() + 0.5 * ((w - 0.3) ** 2).sum() + (z.abs() ** 2 - z.real).sum())
        loss.backward()
        return loss

    for _ in range(3):
        torch_loss = opt.step(closure)
        updates, state = step(params, state, 2.0)  # fn_kwargs reach value_fn
        assert updates["frozen"] is None
        params = ol.apply_updates(params, updates)
        assert params["frozen"] is None and params["pair"][1].dtype == jnp.complex128
        ts = opt.state[tp[0]]
        assert (int(state.n_iter), int(state.func_evals)) == (ts["n_iter"], ts["func_evals"])
        np.testing.assert_allclose(float(state.orig_loss), float(torch_loss.detach()), rtol=1e-10)
        for ours, theirs in zip([params["a"], *params["pair"]], tp):
            np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=1e-9, atol=1e-10)


def test_given_grads_and_value_replace_the_first_evaluation(x64):
    params = {"a": jnp.asarray([[0.5, -1.0], [2.0, 0.0]]), "frozen": None,
              "pair": (jnp.asarray([1.0, -0.5, 0.25]), jnp.asarray([1 + 1j, -0.5j]))}
    tx = ol.lbfgs(history_size=3, max_iter=4)
    state = tx.init(params)
    u_none, s_none = jax.jit(lambda p, s: tx.update(None, s, p, value_fn=_quartic))(params, state)
    value, grads = jax.value_and_grad(_quartic)(params)
    # jax's gradient of a real loss w.r.t. a complex leaf is the conjugate of torch's convention
    grads["pair"] = (grads["pair"][0], jnp.conj(grads["pair"][1]))
    for v in (value, None):
        u, s = jax.jit(lambda p, s, g: tx.update(g, s, p, value_fn=_quartic, value=v))(params, state, grads)
        assert int(s.func_evals) == int(s_none.func_evals) and int(s.n_iter) == int(s_none.n_iter)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(u_none)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)


def test_none_gradient_leaf_counts_as_zero(x64):
    """torch's _gather_flat_grad fills a missing .grad with zeros."""
    params = {"x": jnp.asarray([2.0, -1.0]), "y": jnp.asarray([3.0])}
    tx = ol.lbfgs(max_iter=1)
    state = tx.init(params)
    loss = lambda p: jnp.sum(p["x"] ** 2) + jnp.sum(p["y"] ** 2)
    updates, state = tx.update({"x": 2 * params["x"], "y": None}, state, params, value_fn=loss, value=loss(params))
    # first step: t = min(1, 1/|g|_1) * lr with g = (4, -2, 0); y is not moved
    np.testing.assert_allclose(np.asarray(updates["x"]), -np.array([4.0, -2.0]) / 6.0)
    np.testing.assert_allclose(np.asarray(updates["y"]), [0.0])


def test_traced_hyperparameters_share_one_program(x64):
    traces = []
    loss = lambda p: jnp.sum((p - 3.0) ** 2 * jnp.arange(1.0, 5.0))

    @jax.jit
    def step(p, s, lr, max_iter):
        traces.append(1)
        tx = ol.lbfgs(lr=lr, max_iter=max_iter, history_size=4)
        return tx.update(None, s, p, value_fn=loss)

    p = jnp.zeros(4)
    s = ol.lbfgs(history_size=4).init(p)
    _, s1 = step(p, s, jnp.asarray(0.5), jnp.asarray(3))
    _, s2 = step(p, s, jnp.asarray(1.0), jnp.asarray(7))
    assert len(traces) == 1
    for lr, max_iter, traced in ((0.5, 3, s1), (1.0, 7, s2)):
        _, concrete = ol.lbfgs(lr=lr, max_iter=max_iter, history_size=4).update(None, s, p, value_fn=loss)
        assert (int(traced.n_iter), int(traced.func_evals)) == (int(concrete.n_iter), int(concrete.func_evals))
        np.testing.assert_allclose(np.asarray(traced.d), np.asarray(concrete.d), rtol=1e-12)
    assert int(s1.n_iter) == 2  # max_eval = 3 * 5 // 4 = 3 evaluations stop it after 2 iterations


def test_float32_runs_in_float32():
    params = {"w": jnp.ones((3,), jnp.float32)}
    tx = ol.lbfgs(line_search_fn="strong_wolfe")
    state = tx.init(params)
    updates, state = jax.jit(lambda p, s: tx.update(None, s, p, value_fn=lambda q: jnp.sum((q["w"] - 2.0) ** 2)))(params, state)
    assert updates["w"].dtype == jnp.float32 and state.d.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(ol.apply_updates(params, updates)["w"]), 2.0, rtol=1e-6)


def test_cubic_interpolate_matches_torch(x64):
    rng = np.random.default_rng(0)
    for _ in range(200):
        x1, x2, f1, f2, g1, g2 = rng.standard_normal(6) * rng.choice([0.1, 1, 10], 6)
        bounds = None if rng.random() < 0.5 else tuple(sorted(rng.standard_normal(2)))
        tg1, tg2 = torch.tensor(g1), torch.tensor(g2)
        expected = float(_cubic_interpolate(x1, f1, tg1, x2, f2, tg2, bounds=bounds))
        ours = float(cubic_interpolate(x1, f1, jnp.asarray(g1), x2, f2, jnp.asarray(g2), bounds=bounds))
        np.testing.assert_allclose(ours, expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("t0, max_ls", [(1.0, 25), (20.0, 25), (1e-3, 25), (5.0, 2), (1.0, 0)])
def test_strong_wolfe_matches_torch(t0, max_ls, x64):
    """The standalone search against torch's _strong_wolfe (bracketing, zoom, max_ls fallback)."""
    a = np.array([1.0, 10.0, 0.3])

    def f_np(x, lib):
        coef = torch.tensor(a) if lib is torch else jnp.asarray(a)
        return lib.sum(coef * x**2) + lib.sum(lib.sin(3 * x))

    x = np.array([1.0, -0.7, 2.0])
    tx_ = torch.tensor(x, requires_grad=True)
    loss = f_np(tx_, torch)
    loss.backward()
    g = tx_.grad.clone()
    d = -g

    def torch_obj(xs, t, dd):
        xt = (xs[0] + t * dd).detach().requires_grad_(True)
        val = f_np(xt, torch)
        val.backward()
        return float(val), xt.grad

    f_t, g_t, t_t, n_t = _strong_wolfe(torch_obj, [tx_.detach()], t0, d, float(loss.detach()), g, g.dot(d), max_ls=max_ls)

    vg = jax.value_and_grad(lambda y: f_np(y, jnp))
    jx, jg = jnp.asarray(x), jnp.asarray(g.numpy())
    jd = -jg
    f_j, g_j, t_j, n_j = jax.jit(
        lambda: strong_wolfe(lambda xs, t, dd: vg(xs + t * dd), jx, t0, jd, float(loss.detach()), jg, jnp.dot(jg, jd), max_ls=max_ls)
    )()
    assert int(n_j) == n_t
    np.testing.assert_allclose(float(t_j), float(t_t), rtol=1e-12)
    np.testing.assert_allclose(float(f_j), float(f_t), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g_j), g_t.numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_invalid_lr_matches_torch():
    with pytest.raises(ValueError) as torch_error:
        torch.optim.LBFGS([torch.zeros(1, requires_grad=True)], lr=-1.0)
    with pytest.raises(ValueError) as ours:
        ol.lbfgs(lr=-1.0)
    assert str(ours.value) == str(torch_error.value) == "Invalid learning rate: -1.0"
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        torch.optim.LBFGS([torch.zeros(1, requires_grad=True)], lr=torch.ones(2))
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        ol.lbfgs(lr=jnp.ones(2))


def test_unknown_line_search_matches_torchs_message():
    p = torch.zeros(2, requires_grad=True)
    opt = torch.optim.LBFGS([p], line_search_fn="armijo")

    def closure():
        opt.zero_grad()
        loss = ((p - 1) ** 2).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError) as torch_error:
        opt.step(closure)
    with pytest.raises(RuntimeError) as ours:
        ol.lbfgs(line_search_fn="armijo")
    assert str(ours.value) == str(torch_error.value) == "only 'strong_wolfe' is supported"


def test_param_groups_message_is_torchs():
    with pytest.raises(ValueError) as torch_error:
        torch.optim.LBFGS([{"params": [torch.zeros(1)]}, {"params": [torch.zeros(1)], "lr": 0.1}])
    assert str(torch_error.value) == PARAM_GROUPS_ERROR


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(history_size=0), ValueError, "history_size must be >= 1"),
        (dict(max_eval=0, line_search_fn="strong_wolfe"), ValueError, "max_eval must be >= 1"),
        (dict(max_iter=2.5), TypeError, "max_iter must be an int"),
        (dict(max_eval="3"), TypeError, "max_eval must be an int"),
        (dict(history_size=True), TypeError, "history_size must be an int"),
        (dict(tolerance_grad="x"), TypeError, "tolerance_grad"),
        (dict(lr=lambda c: 0.1), TypeError, "lr must be a number, not a schedule"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ol.lbfgs(**kwargs)


def test_bad_update_calls_leave_state_untouched():
    tx = ol.lbfgs(history_size=2)
    params = {"x": jnp.ones(3)}
    state = tx.init(params)
    loss = lambda p: jnp.sum(p["x"] ** 2)
    with pytest.raises(ValueError, match="needs the objective"):
        tx.update(None, state, params)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(None, state, None, value_fn=loss)
    with pytest.raises(ValueError, match="built for 3 parameters"):
        tx.update(None, state, {"x": jnp.ones(4)}, value_fn=loss)
    with pytest.raises(TypeError, match="scalar loss"):
        tx.update(None, state, params, value_fn=lambda p: p["x"])
    with pytest.raises(ValueError, match="structure"):
        tx.update({"y": jnp.ones(3)}, state, params, value_fn=loss)
    with pytest.raises(TypeError, match="dtype int32"):
        tx.init({"x": jnp.ones(3, jnp.int32)})
    with pytest.raises(ValueError, match="empty parameter list"):
        tx.init({"x": None})
    assert int(state.func_evals) == 0 and int(state.n_iter) == 0


def test_history_beyond_the_memory_limit_is_refused_before_allocating(monkeypatch):
    """Issue 17: `history_size=10**7` on 500 params would preallocate 37 GiB; init refuses it
    (factory, adapter construction, and a loaded state dict carrying it), naming the limit."""
    import importlib

    from optax_like import optim

    lbfgs_module = importlib.import_module("optax_like.optimizers.lbfgs")  # the module, not the factory

    params = [jnp.ones(500)]
    with pytest.raises(ValueError, match=r"history_size=10000000 for 500 parameters needs 37\.3 GiB"):
        ol.lbfgs(history_size=10**7).init(params)
    with pytest.raises(ValueError, match="MAX_HISTORY_BYTES"):
        optim.LBFGS(params, history_size=10**7)
    opt = optim.LBFGS(params, history_size=10)
    saved = opt.state_dict()
    saved["param_groups"][0]["history_size"] = 10**7
    with pytest.raises(ValueError, match="MAX_HISTORY_BYTES"):
        opt.load_state_dict(saved)
    # The limit is exact (2 x history_size x n x itemsize bytes) and can be raised on purpose.
    monkeypatch.setattr(lbfgs_module, "MAX_HISTORY_BYTES", 2 * 8 * 500 * 4)
    assert ol.lbfgs(history_size=8).init(params).old_dirs.shape == (8, 500)
    with pytest.raises(ValueError, match="MAX_HISTORY_BYTES"):
        ol.lbfgs(history_size=9).init(params)
