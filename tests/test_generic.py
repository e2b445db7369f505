"""What every optimizer of `optax_like.registry` does alike, against its reference
(`info.reference_class()`: torch.optim, or timm), from the record alone:

- complex params: refused with the reference's error where the record has no `complex`, and in
  the configurations its `complex_refused` names (`info.refuses_complex`); otherwise torch's `view_as_real` semantics, in both views (the factory and the adapter class),
  on the record's `example`, `flags` (the example and its `full` options with every flag at its
  last listed value: maximize, amsgrad, ...) and each variant (an `Interval`: its midpoint);
  complex128 params within 1e-12 of the reference's after every one of 10 steps, and the class's
  `state_dict()` (buffers such as ASGD's `ax`) within 1e-12 of the reference's at the end, its
  float32 per-param scalars (`step`, `eta`, `mu_product`) equal;
- a None-gradient leaf: skipped as torch skips `p.grad is None` (never started: no state yet;
  started: its state kept), with its params and its every state entry (params-shaped buffers and
  its per-param scalars) bit-identical across the steps it misses, its update None, while the
  params follow the reference's (float64, 1e-12); the shared per-param scalars `init` makes
  refuse a None gradient at trace time, naming the leaf and `per_leaf_scalars`;
- bfloat16 and float16 params: the params, and every per-param buffer, keep the params' dtype;
  the state keeps its structure and the step compiles once; the params stay finite and within
  `LOW_PRECISION_ULPS` ulps of the reference's (which runs in the same dtype; ours computes in
  float32 and rounds once per buffer, torch rounds after every operation) over 12 steps. (A
  tolerance of ulps catches dtype handling, not small numeric differences: those are the
  float32/float64 suites' to find.)

LBFGS (`closure`) is left out: one global state over the flattened params, no per-leaf skip,
and a line search whose branch decisions are not those of a low-precision reference; its
parity, None-gradient run included, is tests/parity/test_optim_db.py's and test_lbfgs.py's.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch

import optax_like as ol
from optax_like import registry
from optax_like.core import LeafScalars
from optax_like.core.torch_layout import torch_layout_of
from tests.parity.harness import assert_close, jax_grad

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

RECORDS = [info for info in registry.OPTIMIZERS.values() if not info.closure]
# a record marked `slow` (registry: its example's parity is the default run's) runs here under `slow`
RECORD_PARAMS = [pytest.param(info, id=info.name, marks=(pytest.mark.slow,) if info.slow else ()) for info in RECORDS]
COMPLEX_STEPS = 10
LOW_PRECISION_STEPS = 12  # RAdam's example (betas (0.9, 0.7)) is rectified from step 10
# ulps of the params' dtype at max(|reference|, 1) (see _assert_within_ulps). torch rounds every
# intermediate to bf16/f16 (its single-tensor path: SGD's and Lion's decay then step, two
# roundings of p per step) where ours rounds the float32 result once per buffer, so the params
# drift apart by up to about half an ulp a step. Measured worst over 12 steps: 6.0 (Lion,
# float16), 5.6 and 4.5 (Muon: bf16 Newton-Schulz on both sides, gemm order), 3.3 (SGD, bf16),
# <= 2.5 for the others.
LOW_PRECISION_ULPS = 8


def _configs(info):
    flags = {**info.example, **info.full, **{k: values[-1] for k, values in info.flags.items()}}
    variants = {name: info.variant_kwargs(name) for name in info.variants}
    return {"example": dict(info.example), "flags": flags, **variants}


def _reference_kwargs(info, kwargs):
    if "foreach" in inspect.signature(info.reference_class()).parameters:
        return dict(kwargs, foreach=False)  # the reference's single-tensor path
    return dict(kwargs)


def _draw(rng, shape, dtype):
    x = rng.standard_normal(shape)
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def _problem(info, dtype, steps, missing=()):
    """Initial params and grads[t][i] of `dtype` (None where (t, i) in `missing`; (rows, values)
    for layout "sparse"), as NumPy arrays."""
    rng = np.random.default_rng(0)
    init = [_draw(rng, s, dtype) for s in info.shapes]
    grads = []
    for t in range(steps):
        row = []
        for i, s in enumerate(info.shapes):
            if info.layout == "sparse":
                rows = rng.integers(0, s[0], 4)
                rows[-1] = rows[0]  # a duplicate row (torch coalesces)
                g = (rows, _draw(rng, (4, *s[1:]), dtype))
            else:
                g = _draw(rng, s, dtype)
            row.append(None if (t, i) in missing else g)
        grads.append(row)
    return init, grads


_TORCH_LOW = {np.dtype(ml_dtypes.bfloat16): torch.bfloat16, np.dtype(np.float16): torch.float16}


def _torch(x):
    """A NumPy array (bf16/f16 included) as a torch tensor of the same dtype."""
    low = _TORCH_LOW.get(x.dtype)
    return torch.tensor(x.astype(np.float32)).to(low) if low else torch.tensor(x)


def _torch_grad(g, p):
    if isinstance(g, tuple):
        return torch.sparse_coo_tensor(torch.tensor(g[0][None]), _torch(g[1]), p.shape)
    return None if g is None else _torch(g)


def _numpy(t, dtype=None):
    """A copy of tensor `t` as NumPy (bf16/f16 tensors as `dtype`)."""
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.detach().float().numpy().astype(dtype)
    return t.detach().numpy().copy()


def reference_run(info, kwargs, init, grads):
    """The reference's params after each step (NumPy, the params' dtype) and its state."""
    params = [_torch(p).requires_grad_() for p in init]
    opt = info.new_reference(params, **_reference_kwargs(info, kwargs))
    trajectory = []
    for step in grads:
        for p, g in zip(params, step):
            p.grad = _torch_grad(g, p)
        opt.step()
        trajectory.append([_numpy(p, init[0].dtype) for p in params])
    return trajectory, opt.state_dict()["state"]


def _grads(info, step):
    return [jax_grad(g, s) for g, s in zip(step, info.shapes)]


def our_run(view, info, kwargs, init, grads):
    """Our params after each step (copies: a step donates them) in the functional or class
    view, and the class's `state_dict()["state"]` at the end (None for the functional view)."""
    params, trajectory = [jnp.asarray(p) for p in init], []
    if view == "class":
        opt = info.new_adapter(params, **kwargs)
        for g in grads:
            opt.zero_grad()
            opt.backward(_grads(info, g))
            opt.step()
            trajectory.append([np.array(p) for p in opt.params])
        return trajectory, opt.state_dict()["state"]
    tx = info.factory(**kwargs)

    @jax.jit
    def step(grads, state, params):
        updates, state = tx.update(grads, state, params)
        return ol.apply_updates(params, updates), state

    state = tx.init(params)
    for g in grads:
        params, state = step(_grads(info, g), state, params)
        trajectory.append([np.array(p) for p in params])
    return trajectory, None


# ------------------------------------------------------------------------------- complex params
# by default the example; the all-flags configuration (every state entry) and the variants under `slow`
COMPLEX_CASES = [pytest.param(info, config, view, id=f"{info.name}-{config}-{view}",
                              marks=(pytest.mark.slow,) if info.slow or config != "example" else ())
                 for info in RECORDS
                 for config, kwargs in _configs(info).items() if not info.refuses_complex(kwargs)
                 for view in ("functional", "class")]


def _assert_state_close(ours, theirs):
    assert sorted(ours) == sorted(theirs)
    for pid, entry in theirs.items():
        assert sorted(ours[pid]) == sorted(entry), pid
        for key, value in entry.items():
            if value is None:  # a declared `none_keys` entry (timm's SGDW without momentum)
                assert ours[pid][key] is None, (pid, key)
                continue
            b = _numpy(value) if isinstance(value, torch.Tensor) else np.asarray(value)
            a = np.asarray(ours[pid][key])
            assert a.shape == b.shape and a.dtype == b.dtype, (pid, key, a.dtype, b.dtype)
            rtol = 1e-12 if b.dtype in (np.float64, np.complex128) else 0.0  # float32 eta, mu_product: exact
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol, err_msg=f"param {pid} {key!r}")


@pytest.mark.parametrize("info, config, view", COMPLEX_CASES)
def test_complex_params_match_the_reference(info, config, view, x64):
    kwargs = _configs(info)[config]
    init, grads = _problem(info, np.complex128, COMPLEX_STEPS)
    theirs, their_state = reference_run(info, kwargs, init, grads)
    ours, our_state = our_run(view, info, kwargs, init, grads)
    for t, (mine, reference) in enumerate(zip(ours, theirs)):
        assert all(p.dtype == np.complex128 for p in mine)
        assert_close(mine, reference, "float64", t + 1, info.rtol32 or info.rtol64 or 1e-12)
    if our_state is not None:
        _assert_state_close(our_state, their_state)


REFUSED_CASES = [pytest.param(info, dict(info.example), id=info.name, marks=(pytest.mark.slow,) if info.slow else ())
                 for info in RECORDS if not info.complex]
REFUSED_CASES += [pytest.param(info, {**info.example, **refused}, id=f"{info.name}-{'-'.join(refused)}")
                  for info in RECORDS for refused in info.complex_refused]


@pytest.mark.parametrize("info, kwargs", REFUSED_CASES)
def test_complex_params_are_refused_like_the_reference(info, kwargs):
    """Records without `complex`, and the configurations a record's `complex_refused` names: the
    reference refuses complex params (constructing, or at the first step) and our `init` raises
    the same error, word for word. A record's `complex_refused_here`: the reference takes complex
    params without supporting them (a deviation) and ours raises that TypeError of its own."""
    assert info.refuses_complex(kwargs)
    param = torch.rand(*info.shapes[0], dtype=torch.complex64)
    if info.complex_refused_here:
        opt = info.new_reference([param], **_reference_kwargs(info, kwargs))
        param.grad = torch.rand_like(param)
        opt.step()  # no error: when the reference starts refusing, its error becomes ours
        with pytest.raises(TypeError) as ours:
            info.factory(**kwargs).init([jnp.zeros(info.shapes[0], jnp.complex64)])
        assert str(ours.value) == info.complex_refused_here
        return
    with pytest.raises(Exception) as theirs:
        opt = info.new_reference([param], **_reference_kwargs(info, kwargs))
        param.grad = torch.rand_like(param)
        opt.step()
    with pytest.raises(type(theirs.value)) as ours:
        info.factory(**kwargs).init([jnp.zeros(info.shapes[0], jnp.complex64)])
    assert str(ours.value) == str(theirs.value)


# ------------------------------------------------------------------------------- None gradients
# The last param misses steps 0-2 (no state yet, as torch's lazy init) and 5-6 (started: kept).
MISSING_STEPS = (0, 1, 2, 5, 6)


def _leaf_state(state, key, index):
    """Every state entry of param `key` (the `index`-th leaf): its params-shaped buffers (under
    its dict key) and its per-param scalars (LeafScalars[index])."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state, is_leaf=lambda x: isinstance(x, LeafScalars))[0]:
        if isinstance(leaf, LeafScalars):
            out.append(np.asarray(leaf[index]))
        elif any(isinstance(k, jax.tree_util.DictKey) and k.key == key for k in path):
            out.append(np.asarray(leaf))
    return out


@pytest.mark.parametrize("info", RECORD_PARAMS)
def test_none_gradient_leaf_is_skipped_with_its_state_untouched(info, x64):
    n = len(info.shapes)
    key, index = f"p{n - 1}", n - 1
    init, grads = _problem(info, np.float64, 8, missing={(t, n - 1) for t in MISSING_STEPS})
    theirs, _ = reference_run(info, info.example, init, grads)
    names = [f"p{i}" for i in range(n)]
    tx = info.factory(**info.example)
    params = {k: jnp.asarray(p) for k, p in zip(names, init)}
    shared = tx.init(params)
    state = ol.per_leaf_scalars(shared)
    update = jax.jit(tx.update)
    kept = _leaf_state(state, key, index)
    assert kept, "no state entry found for the param"
    for t, step in enumerate(grads):
        g = dict(zip(names, _grads(info, step)))
        before = params[key]
        updates, state = update(g, state, params)
        params = ol.apply_updates(params, updates)
        now = _leaf_state(state, key, index)
        if t in MISSING_STEPS:
            assert updates[key] is None
            np.testing.assert_array_equal(params[key], before)
            for a, b in zip(now, kept):
                np.testing.assert_array_equal(a, b, err_msg=f"step {t + 1}")
        kept = now
        assert_close([params[k] for k in names], theirs[t], "float64", t + 1, info.rtol32 or info.rtol64 or 1e-12)
    if any(isinstance(x, LeafScalars) and x.is_shared
           for x in jax.tree.leaves(shared, is_leaf=lambda x: isinstance(x, LeafScalars))):
        with pytest.raises(ValueError, match=rf"\['{key}'\].*per_leaf_scalars"):
            update(dict(zip(names, _grads(info, grads[0]))), shared, params)


# ------------------------------------------------------------------------------- bf16 / f16
def _assert_within_ulps(mine, reference, dtype, ulps, step):
    """Elements where the reference is not finite are left out: float16 SparseAdam's `eps=1e-8`
    is 0 in float16 and a small gradient's second moment underflows to 0, so torch steps a row
    by exp_avg / 0 = inf; ours computes in float32 and stays finite there."""
    eps = float(jnp.finfo(dtype).eps)
    for i, (a, b) in enumerate(zip(mine, reference)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.isfinite(a).all(), f"step {step}, param {i}: not finite"
        a, b = a[np.isfinite(b)], b[np.isfinite(b)]
        err = np.abs(a - b) / (np.maximum(np.abs(b), 1.0) * eps)
        worst = float(err.max()) if err.size else 0.0
        assert worst <= ulps, f"step {step}, param {i}: {worst:.1f} ulps from the reference (> {ulps})"


@pytest.mark.parametrize("dtype", [pytest.param(jnp.bfloat16, id="bfloat16"),
                                   pytest.param(jnp.float16, id="float16", marks=pytest.mark.slow)])  # budget
@pytest.mark.parametrize("info", RECORD_PARAMS)
def test_low_precision_params_keep_their_dtype_and_follow_the_reference(info, dtype):
    init, grads = _problem(info, np.dtype(dtype), LOW_PRECISION_STEPS)
    theirs, _ = reference_run(info, info.example, init, grads)
    tx = info.factory(**info.example)
    params = [jnp.asarray(p) for p in init]
    state = tx.init(params)
    structure = jax.tree.structure(state)
    update = jax.jit(tx.update)
    for t, step in enumerate(grads):
        updates, state = update(_grads(info, step), state, params)
        params = ol.apply_updates(params, updates)
        assert jax.tree.structure(state) == structure
        assert all(p.dtype == dtype for p in params)
        _assert_within_ulps(params, theirs[t], dtype, LOW_PRECISION_ULPS, t + 1)
    assert update._cache_size() == 1
    buffers = [(path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
               if leaf.ndim and isinstance(path[-1], jax.tree_util.SequenceKey)]  # per-param arrays
    assert buffers
    # buffers a state type declares in a dtype of their own (`own_dtype`: timm's Adafactor's float32
    # state for 16-bit params, AdafactorBigVision's momentum_dtype) are not the params'
    own = {f for node in jax.tree.leaves(state, is_leaf=lambda x: torch_layout_of(x) is not None)
           if torch_layout_of(node) is not None for f in torch_layout_of(node).own_dtype}  # pyright: ignore[reportOptionalMemberAccess]
    buffers = [(path, leaf) for path, leaf in buffers
               if not any(isinstance(k, jax.tree_util.GetAttrKey) and k.name in own for k in path)]
    for path, leaf in buffers:
        assert leaf.dtype == dtype, jax.tree_util.keystr(path)
