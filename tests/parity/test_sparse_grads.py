"""optax_like.sgd / optax_like.adagrad (and optim.SGD / optim.Adagrad) with sparse gradients.

torch.optim.SGD and torch.optim.Adagrad accept sparse COO gradients (`grad.is_sparse`); ours take
`jax.experimental.sparse.BCOO` leaves (and `RowSparseGrad`). Every step here hands torch a
`torch.sparse_coo_tensor` and ours the same entries as a BCOO, through the functional view (a
jitted `update` + `apply_updates`) and the adapter (`opt.backward(grads); opt.step()`), in
float64 (scoped) and float32. The steps include a pattern whose values are all zero, a gradient
with no entries, and (in the `duplicates` runs) uncoalesced gradients with repeated, unsorted
indices. Configurations: torch's own sparse ones (`metadata_for_sparse` of its optim_db records,
applied to its optim inputs as its `test_rosenbrock_sparse` does) and one per option.

How close: within a few ulps (relative, floor 1), not bit for bit, because torch itself is not
reproducible bit for bit: its AVX2/AVX-512 kernels add a sparse tensor with a fused multiply-add
(its portable kernels do not), its CPU `sqrt` is not always correctly rounded, and it adds
duplicate entries one by one where ours sums them first. What is exact is checked exactly:
Adagrad's `sum` against torch's, Adagrad's params against torch's sparse formula evaluated in
NumPy, and every entry outside the gradient's pattern (params and state) against its old bits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.experimental import sparse as jsparse
from torch.testing._internal.common_optimizers import _get_optim_inputs_including_global_cliquey_kwargs, optim_db

import optax_like as ol
from tests.optim.trace_count import step_traces
from optax_like.transforms.combine import chain
from optax_like.transforms.adagrad import scale_by_adagrad
from optax_like.transforms.momentum import trace
from optax_like.transforms.scaling import negate, scale_by_learning_rate
from optax_like.transforms.weight_decay import add_decayed_weights
from tests.parity.harness import jit_step

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),  # tests/conftest.py
    pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled"),
]

# (param shape, sparse axes k): rows of a matrix (hybrid COO), a fully sparse matrix, a vector;
# k = 0 marks a param that gets dense gradients (a tree mixing both kinds).
LAYOUT = (((6, 3), 1), ((5, 4), 2), ((7,), 1), ((4,), 0))
NNZ = 5
STEPS = 6
ZERO_STEP, EMPTY_STEP = 2, 4  # a pattern whose values are all 0.0; a gradient with no entries

# max |ours - torch| / (|torch| + 1), in epsilons (2.2e-16, 1.2e-7): measured <= 1 over these runs
ULPS = 2


# ----------------------------------------------------------------------------- configurations
def _torch_sparse_configs(name):
    """torch's test_rosenbrock_sparse configurations: its optim inputs without the keys of
    `metadata_for_sparse`, deduplicated, with its lr; plus `metadata_for_sparse`'s own kwargs."""
    info = next(i for i in optim_db if i.optim_cls.__name__ == name)
    updates, _ = info.metadata_for_sparse
    configs = [dict(updates)]
    for inp in _get_optim_inputs_including_global_cliquey_kwargs("cpu", torch.float64, info,
                                                                 skip=("differentiable", "fused")):
        kwargs = {k: v for k, v in inp.kwargs.items() if k not in updates}
        if kwargs:
            kwargs["lr"] = updates["lr"]
            if kwargs not in configs:
                configs.append(kwargs)
    return configs


SGD_CONFIGS = _torch_sparse_configs("SGD") + [
    dict(lr=0.1, maximize=True),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.9, dampening=0.3, maximize=True),
    dict(lr=0.1, momentum=0.8, nesterov=True),
]
ADAGRAD_CONFIGS = _torch_sparse_configs("Adagrad") + [
    dict(lr=0.1, lr_decay=0.1, initial_accumulator_value=0.5),
    dict(lr=0.5, eps=1e-3, maximize=True),
]
CASES = [("SGD", c) for c in SGD_CONFIGS] + [("Adagrad", c) for c in ADAGRAD_CONFIGS]


def test_torch_sparse_configurations_are_read():
    # the records this file relies on: torch's sparse kwargs and their derived configurations
    assert SGD_CONFIGS[:2] == [dict(lr=4.8e-3, maximize=False, momentum=0, nesterov=False, weight_decay=0),
                               dict(dampening=0.5, lr=4.8e-3)]
    assert ADAGRAD_CONFIGS[:3] == [dict(lr=0.1, weight_decay=0, lr_decay=0), dict(maximize=True, lr=0.1),
                                   dict(initial_accumulator_value=0.1, lr=0.1)]


# ---------------------------------------------------------------------------------- gradients
def draw_grads(dtype, *, duplicates, seed=0, steps=STEPS, layout=LAYOUT, complex_values=False):
    """grads[t][i]: `(indices (k, nnz), values (nnz, *shape[k:]))` for sparse params, an array
    for dense ones. Unique sorted indices, or (duplicates) random ones with repeats."""
    rng = np.random.default_rng(seed)

    def values(shape):
        x = rng.standard_normal(shape).astype(dtype)
        if complex_values:
            x = x + 1j * rng.standard_normal(shape).astype(dtype)
        return x

    out = []
    for t in range(steps):
        step = []
        for shape, k in layout:
            if k == 0:
                step.append(values(shape))
                continue
            nnz = 0 if t == EMPTY_STEP else NNZ
            if duplicates:
                idx = np.stack([rng.integers(0, shape[a], nnz) for a in range(k)])
                if nnz:
                    idx[:, -1] = idx[:, 0]  # at least one repeated index every step
                    idx[:, -2] = idx[:, 0]  # ... three times
            else:
                flat = np.sort(rng.choice(int(np.prod(shape[:k])), nnz, replace=False))
                idx = np.stack(np.unravel_index(flat, shape[:k])).astype(np.int64)
            vals = values((nnz, *shape[k:]))
            if t == ZERO_STEP:
                vals = np.zeros_like(vals)
            step.append((idx.reshape(k, nnz), vals))
        out.append(step)
    return out


def to_torch(g, shape):
    if isinstance(g, tuple):
        idx, vals = g
        return torch.sparse_coo_tensor(torch.tensor(idx), torch.tensor(vals), shape)
    return torch.tensor(g)


def to_jax(g, shape):
    if isinstance(g, tuple):
        idx, vals = g
        return jsparse.BCOO((jnp.asarray(vals), jnp.asarray(idx.T.astype(np.int32))), shape=shape)
    return jnp.asarray(g)


def ulps(a, b) -> float:
    """max |a - b| / (|b| + 1), in units of the dtype's epsilon (NaNs must match)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(b)
    if not ok.any():
        return 0.0
    real = np.finfo(b.dtype).dtype
    return float(np.max(np.abs(a[ok] - b[ok]) / (np.abs(b[ok]) + 1)) / np.finfo(real).eps)


def _torch_np(x):
    return x.detach().to_dense().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# ------------------------------------------------------------------------------- the two views
_STEPS: dict = {}  # (name, config, x64) -> (tx, jitted step): runs share their compilations


class Functional:
    def __init__(self, name, config, params):
        key = (name, repr(sorted(config.items())), jax.config.jax_enable_x64)
        if key not in _STEPS:
            tx = getattr(ol, name.lower())(**config)
            _STEPS[key] = (tx, jit_step(tx))
        self.tx, self.step_fn = _STEPS[key]
        self.params = [jnp.asarray(p) for p in params]
        self.state = self.tx.init(self.params)

    def step(self, grads):
        self.params, self.state = self.step_fn(grads, self.state, self.params)

    def buffers(self, key):
        inner = self.state[-1] if key == "sum" else self.state[-2]  # scale_by_adagrad; trace
        return list(getattr(inner, key))


class Adapter:
    def __init__(self, name, config, params):
        self.opt = getattr(ol.optim, name)([jnp.asarray(p) for p in params], **config)

    def step(self, grads):
        self.opt.zero_grad()
        self.opt.backward(grads)
        self.opt.step()

    @property
    def params(self):
        return self.opt.params

    def buffers(self, key):
        state = self.opt.state_dict()["state"]
        return [state[i][key] for i in range(len(state))]


def run_against_torch(name, config, dtype, view, *, duplicates, grads=None, layout=LAYOUT, params=None):
    """Steps torch and ours on the same gradients; returns (ours, torch optimizer, torch params,
    worst ulps of the params over all steps)."""
    rng = np.random.default_rng(1)
    if params is None:
        params = [rng.standard_normal(shape).astype(dtype) for shape, _ in layout]
    grads = draw_grads(dtype, duplicates=duplicates) if grads is None else grads
    torch_params = [torch.tensor(p, requires_grad=True) for p in params]
    torch_opt = getattr(torch.optim, name)(torch_params, **config)
    ours = view(name, config, params)
    worst = 0.0
    for step in grads:
        for p, g, (shape, _) in zip(torch_params, step, layout):
            p.grad = to_torch(g, shape)
        torch_opt.step()
        ours.step([to_jax(g, shape) for g, (shape, _) in zip(step, layout)])
        worst = max([worst] + [ulps(a, _torch_np(b)) for a, b in zip(ours.params, torch_params)])
    return ours, torch_opt, torch_params, worst


# ------------------------------------------------------------------------------ parity tests
def _default_first(cases):
    """Each optimizer's first configuration in the default run, the rest under `-m slow`."""
    seen = set()
    out = []
    for name, config in cases:
        out.append(pytest.param(name, config, id=f"{name}-{config}",
                                marks=() if name not in seen else pytest.mark.slow))
        seen.add(name)
    return out


@pytest.mark.parametrize("duplicates", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["unique", "duplicates"])
@pytest.mark.parametrize("name, config", _default_first(CASES))
def test_functional_matches_torch(name, config, duplicates, parity_dtype):
    ours, torch_opt, torch_params, worst = run_against_torch(
        name, config, parity_dtype, Functional, duplicates=duplicates)
    assert worst <= ULPS, f"params {worst} ulps from torch's"
    if name == "Adagrad":
        # sum[I] + g*g: exact (the repeated indices of a run are summed as torch sums them)
        for ours_sum, p in zip(ours.buffers("sum"), torch_params):
            np.testing.assert_array_equal(np.asarray(ours_sum), torch_opt.state[p]["sum"].numpy())
        steps = ours.state[-1].step
        assert [int(steps[i]) for i in range(len(torch_params))] == [
            int(torch_opt.state[p]["step"]) for p in torch_params] == [STEPS] * len(torch_params)
    elif config.get("momentum", 0):
        # torch's buffer is a sparse tensor (dense for the dense param): the same values
        for buf, p in zip(ours.buffers("momentum_buffer"), torch_params):
            assert ulps(buf, _torch_np(torch_opt.state[p]["momentum_buffer"])) <= ULPS


ADAPTER_CASES = [("SGD", SGD_CONFIGS[0]), ("SGD", SGD_CONFIGS[-2]), ("SGD", SGD_CONFIGS[-1]),
                 ("Adagrad", ADAGRAD_CONFIGS[1]), ("Adagrad", ADAGRAD_CONFIGS[-2])]


@pytest.mark.parametrize("name, config", ADAPTER_CASES, ids=[f"{n}-{c}" for n, c in ADAPTER_CASES])
def test_adapter_matches_torch(name, config, parity_dtype):
    ours, torch_opt, torch_params, worst = run_against_torch(
        name, config, parity_dtype, Adapter, duplicates=True)
    assert worst <= ULPS, f"params {worst} ulps from torch's"
    key = "sum" if name == "Adagrad" else "momentum_buffer" if config.get("momentum", 0) else None
    if key is not None:
        for ours_buf, p in zip(ours.buffers(key), torch_params):
            theirs = _torch_np(torch_opt.state[p][key])
            if key == "sum":
                np.testing.assert_array_equal(np.asarray(ours_buf), theirs)
            else:
                assert ulps(ours_buf, theirs) <= ULPS
    if name == "Adagrad":
        state = ours.opt.state_dict()["state"]
        assert [float(state[i]["step"]) for i in range(len(torch_params))] == [float(STEPS)] * len(torch_params)


def test_functional_and_adapter_agree_bit_for_bit(x64):
    grads = draw_grads("float64", duplicates=True, seed=3)
    for name, config in [("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)), ("Adagrad", dict(lr=0.1, lr_decay=0.1))]:
        params = [np.random.default_rng(2).standard_normal(shape) for shape, _ in LAYOUT]
        views = [Functional(name, config, params), Adapter(name, config, params)]
        for step in grads:
            for view in views:
                view.step([to_jax(g, shape) for g, (shape, _) in zip(step, LAYOUT)])
        for a, b in zip(views[0].params, views[1].params):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name, config", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adagrad", dict(lr=0.1, lr_decay=0.1))])
def test_complex_params_match_torch(name, config, x64):
    # torch's sparse Adagrad branch squares, roots and divides complex numbers (no real view)
    layout = (((6, 3), 1), ((7,), 1))
    grads = draw_grads("float64", duplicates=True, layout=layout, complex_values=True)
    rng = np.random.default_rng(4)
    params = [rng.standard_normal(s) + 1j * rng.standard_normal(s) for s, _ in layout]
    ours, torch_opt, torch_params, worst = run_against_torch(
        name, config, "float64", Functional, duplicates=True, grads=grads, layout=layout, params=params)
    assert worst <= 2 * ULPS, f"params {worst} ulps from torch's"  # complex sqrt and division: libm vs XLA


def test_sparse_and_dense_gradients_alternate_like_torch(parity_dtype):
    # A param may get a sparse gradient one step and a dense one the next: torch's Adagrad takes
    # both in any order, as does its SGD with a dense momentum buffer (a dense first gradient).
    sparse = draw_grads(parity_dtype, duplicates=False, seed=5)
    dense = [[np.asarray(np.random.default_rng(t).standard_normal(shape), parity_dtype) for shape, _ in LAYOUT]
             for t in range(STEPS)]
    mixed = [dense[t] if t % 3 == 0 else sparse[t] for t in range(STEPS)]
    for name, config in [("Adagrad", dict(lr=0.1, maximize=True)), ("SGD", dict(lr=0.1, momentum=0.9))]:
        for view in (Functional, Adapter):
            *_, worst = run_against_torch(name, config, parity_dtype, view, duplicates=False, grads=mixed)
            assert worst <= ULPS, (name, view.__name__, worst)


# ----------------------------------------------------------------- exactness where it is defined
def _sparse_adagrad_numpy(p, s, idx, vals, clr, eps):
    """torch's sparse branch evaluated in NumPy, every operation rounded (no FMA)."""
    p, s = p.copy(), s.copy()
    flat = np.ravel_multi_index(tuple(idx), p.shape[: idx.shape[0]])
    rows, inverse = np.unique(flat, return_inverse=True)
    dense = p.shape[idx.shape[0]:]
    g = np.zeros((len(rows), *dense), p.dtype)
    for j, r in enumerate(inverse.reshape(-1)):  # coalesce: duplicates summed in entry order
        g[r] = g[r] + vals[j]
    p2, s2 = p.reshape(-1, *dense), s.reshape(-1, *dense)
    s2[rows] = s2[rows] + g * g
    std = np.sqrt(s2[rows]) + p.dtype.type(eps)
    p2[rows] = p2[rows] + p.dtype.type(-clr) * (g / std)
    return p2.reshape(p.shape), s2.reshape(s.shape)


def test_adagrad_rounds_as_torchs_sparse_branch(parity_dtype):
    # The sparse branch adds `(-clr) * (g / std)`; the dense rule is `(-clr * g) / std`. Ours
    # gives the sparse one bit for bit, jitted or not.
    shape, dtype = (40, 3), np.dtype(parity_dtype)
    rng = np.random.default_rng(7)
    p, s = rng.standard_normal(shape).astype(dtype), np.full(shape, 0.25, dtype)
    tx = ol.adagrad(lr=0.1, initial_accumulator_value=0.25, eps=1e-3)
    params = [jnp.asarray(p)]
    state = tx.init(params)
    step = jit_step(tx)
    dense_rule_differs = False
    for t in range(5):
        idx = rng.integers(0, shape[0], (1, 30))
        vals = rng.standard_normal((30, 3)).astype(dtype)
        g = [to_jax((idx, vals), shape)]
        eager = ol.apply_updates(params, tx.update(g, state, params)[0])  # not jitted
        params, state = step(g, state, params)
        p, s = _sparse_adagrad_numpy(p, s, idx, vals, 0.1, 1e-3)
        np.testing.assert_array_equal(np.asarray(params[0]), p)
        np.testing.assert_array_equal(np.asarray(eager[0]), p)  # no FMA contraction either way
        np.testing.assert_array_equal(np.asarray(state[-1].sum[0]), s)
        rows = np.unique(idx[0])
        std = np.sqrt(s[rows]) + dtype.type(1e-3)
        g_rows = np.asarray(jsparse.BCOO((jnp.asarray(vals), jnp.asarray(idx.T)), shape=shape).todense())[rows]
        dense_rule_differs |= bool(np.any((dtype.type(-0.1) * g_rows) / std != dtype.type(-0.1) * (g_rows / std)))
    assert dense_rule_differs  # the data tell the two roundings apart


@pytest.mark.parametrize("name, config", [
    ("SGD", dict(lr=0.1)), ("SGD", dict(lr=0.1, maximize=True)),
    ("Adagrad", dict(lr=0.1)), ("Adagrad", dict(lr=0.1, maximize=True, eps=0.0)),
])
def test_entries_outside_the_pattern_keep_their_bits(name, config):
    # -0.0, +0.0, inf and ordinary values outside the pattern, in params and in Adagrad's sum
    # (eps=0 with sum 0: torch would divide 0/0 at a touched entry, but none is touched here)
    p = np.array([[-0.0, 1.5], [0.0, -np.inf], [2.0, -3.0], [np.inf, 7.0]], np.float32)
    opt = getattr(ol.optim, name)([jnp.asarray(p)], **config)
    tx = getattr(ol, name.lower())(**config)
    state = tx.init([jnp.asarray(p)])
    zero_step = jsparse.BCOO((jnp.zeros((1, 2)), jnp.array([[2]], jnp.int32)), shape=(4, 2))
    empty = jsparse.BCOO((jnp.zeros((0, 2)), jnp.zeros((0, 1), jnp.int32)), shape=(4, 2))
    one = jsparse.BCOO((jnp.ones((1, 2)), jnp.array([[2]], jnp.int32)), shape=(4, 2))
    params = [jnp.asarray(p)]
    for g in (one, zero_step, empty, one):
        opt.backward([g])
        opt.step()
        opt.zero_grad()
        updates, state = jax.jit(tx.update)([g], state, params)
        params = ol.apply_updates(params, updates)
    outside = np.ones(p.shape, bool)
    outside[2] = False
    for got in (opt.params[0], params[0]):
        got = np.asarray(got)
        assert np.array_equal(got.view(np.uint32)[outside], p.view(np.uint32)[outside])
        assert np.all(got[2] != p[2])  # the touched row moved
    if name == "Adagrad":
        s = np.asarray(state[-1].sum[0])
        assert np.array_equal(s.view(np.uint32)[outside], np.zeros(p.shape, np.float32).view(np.uint32)[outside])
        assert int(state[-1].step[0]) == 4  # the empty gradient counts a step (torch's)


def test_all_zero_pattern_and_empty_gradient_like_torch(x64):
    # Adagrad with eps=0 and a zero sum: torch's 0 / (sqrt(0) + 0) at a touched zero entry is
    # nan; an empty gradient touches nothing (and counts a step)
    for config in (dict(lr=0.1, eps=0.0), dict(lr=0.1, momentum=0.5)):
        name = "Adagrad" if "eps" in config else "SGD"
        layout = (((5, 2), 1),)
        grads = [[(np.array([[1, 3]]), np.zeros((2, 2)))], [(np.zeros((1, 0), np.int64), np.zeros((0, 2)))],
                 [(np.array([[3, 4]]), np.ones((2, 2)))], [(np.array([[1, 1]]), np.zeros((2, 2)))]]
        for view in (Functional, Adapter):
            ours, torch_opt, torch_params, worst = run_against_torch(
                name, config, "float64", view, duplicates=False, grads=grads, layout=layout)
            assert worst == 0.0, (name, view.__name__, worst)
            got, want = np.asarray(ours.params[0]), torch_params[0].detach().numpy()
            assert np.array_equal(np.isnan(got), np.isnan(want)) and (name == "SGD" or np.isnan(want).any())


def test_row_sparse_grads_equal_bcoo(x64):
    shape = (6, 3)
    idx, vals = np.array([4, 1, 4]), np.random.default_rng(0).standard_normal((3, 3))
    bcoo = jsparse.BCOO((jnp.asarray(vals), jnp.asarray(idx[:, None].astype(np.int32))), shape=shape)
    rows = ol.RowSparseGrad(jnp.asarray(idx.astype(np.int32)), jnp.asarray(vals))
    params = [jnp.ones(shape)]
    for tx in (ol.sgd(0.1, momentum=0.9, maximize=True), ol.adagrad(0.1, lr_decay=0.5)):
        a = tx.update([bcoo], tx.init(params), params)
        b = tx.update([rows], tx.init(params), params)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # a RowSparseGrad has no shape of its own: SGD needs the params
    with pytest.raises(ValueError, match="needs the params"):
        ol.sgd(0.1).update([rows], ol.sgd(0.1).init(params))


# -------------------------------------------------------------------------------- error cases
def _torch_error(name, config):
    p = torch.zeros(4, requires_grad=True)
    opt = getattr(torch.optim, name)([p], **config)
    p.grad = torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.tensor([1.0, 2.0]), (4,))
    with pytest.raises(RuntimeError) as error:
        opt.step()
    return str(error.value)


SPARSE_GRAD = jsparse.BCOO((jnp.array([1.0, 2.0]), jnp.array([[0], [2]], jnp.int32)), shape=(4,))


@pytest.mark.parametrize("name, config", [
    ("SGD", dict(lr=0.1, weight_decay=0.1)),
    ("SGD", dict(lr=0.1, weight_decay=0.1, momentum=0.9, nesterov=True, maximize=True)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1, maximize=True, lr_decay=0.1)),
])
def test_weight_decay_with_sparse_grads_raises_torchs_error(name, config):
    message = _torch_error(name, config)
    assert message == {"SGD": "add(sparse, dense) is not supported. Use add(dense, sparse) instead.",
                       "Adagrad": "weight_decay option is not compatible with sparse gradients"}[name]
    tx = getattr(ol, name.lower())(**config)
    params = [jnp.zeros(4)]
    state = tx.init(params)
    with pytest.raises(RuntimeError) as ours:
        tx.update([SPARSE_GRAD], state, params)
    assert str(ours.value) == message
    with pytest.raises(RuntimeError) as ours:  # jitted, in a tree with a dense leaf
        jax.jit(tx.update)([jnp.ones(4), SPARSE_GRAD], tx.init([jnp.zeros(4)] * 2), [jnp.zeros(4)] * 2)
    assert str(ours.value) == message
    opt = getattr(ol.optim, name)([jnp.zeros(4)], **config)
    opt.backward([SPARSE_GRAD])
    with pytest.raises(RuntimeError) as ours:
        opt.step()
    assert str(ours.value) == message
    np.testing.assert_array_equal(np.asarray(opt.params[0]), np.zeros(4))  # nothing stepped


@pytest.mark.parametrize("factory", [ol.sgd, ol.adagrad])
def test_weight_decay_zero_or_traced(factory):
    params = [jnp.zeros(4)]
    # a concrete zero array is zero: no error
    tx = factory(0.1, weight_decay=jnp.asarray(0.0))
    tx.update([SPARSE_GRAD], tx.init(params), params)
    # traced (inject_hyperparams under jit) it may be nonzero: torch's error, with the way out
    tx = ol.inject_hyperparams(factory)(lr=0.1)
    with pytest.raises(RuntimeError) as error:
        jax.jit(tx.update)([SPARSE_GRAD], tx.init(params), params)
    assert str(error.value) == _torch_error(factory.__name__.replace("sgd", "SGD").replace("adagrad", "Adagrad"),
                                            dict(lr=0.1, weight_decay=0.1))
    assert "static_args=('weight_decay',)" in error.value.__notes__[0]
    tx = ol.inject_hyperparams(factory, static_args=("weight_decay",))(lr=0.1)
    jax.jit(tx.update)([SPARSE_GRAD], tx.init(params), params)


def test_malformed_sparse_grads_are_refused():
    params = [jnp.zeros((4, 2))]
    for tx in (ol.sgd(0.1), ol.adagrad(0.1)):
        state = tx.init(params)
        wrong_shape = jsparse.BCOO((jnp.ones((1, 2)), jnp.array([[0]], jnp.int32)), shape=(5, 2))
        with pytest.raises(ValueError, match=r"updates leaf \[0\] has shape \(5, 2\)"):
            tx.update([wrong_shape], state, params)
        batched = jsparse.BCOO.fromdense(jnp.ones((4, 2)), n_batch=1)
        with pytest.raises(ValueError, match="without batch dimensions"):
            tx.update([batched], state, params)
        with pytest.raises(TypeError, match="BCOO or RowSparseGrad, got BCSR"):
            tx.update([jsparse.BCSR.fromdense(jnp.ones((4, 2)))], state, params)
        with pytest.raises(ValueError, match="structure"):
            tx.update([wrong_shape, wrong_shape], state, params)


def test_sgd_momentum_buffer_deviation_is_the_dense_rule():
    # torch's buffer is sparse after a sparse first gradient: a later dense gradient raises
    # there (and Nesterov refuses a sparse gradient after a dense first one). Ours keeps a dense
    # buffer (the state's structure is fixed at init) and continues with SGD's rule on the
    # densified gradients (documented in optax_like.sgd).
    for config, kinds in [(dict(lr=0.1, momentum=0.9), "sd"), (dict(lr=0.1, momentum=0.9, nesterov=True), "ds")]:
        p = torch.zeros(4, dtype=torch.float32, requires_grad=True)
        opt = torch.optim.SGD([p], **config)
        grads = {"s": SPARSE_GRAD, "d": jnp.array([1.0, -1.0, 0.5, 2.0], jnp.float32)}
        with pytest.raises(RuntimeError, match="add\\(sparse, dense\\) is not supported"):
            for kind in kinds:
                p.grad = (torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.tensor([1.0, 2.0]), (4,))
                          if kind == "s" else torch.tensor(np.asarray(grads["d"])))
                opt.step()
        tx = ol.sgd(**config)
        params, state = [jnp.zeros(4)], tx.init([jnp.zeros(4)])
        ref_params, ref_state = [jnp.zeros(4)], tx.init([jnp.zeros(4)])
        for kind in kinds:
            updates, state = tx.update([grads[kind]], state, params)
            params = ol.apply_updates(params, updates)
            dense = grads[kind].todense() if kind == "s" else grads[kind]
            updates, ref_state = tx.update([dense], ref_state, ref_params)
            ref_params = ol.apply_updates(ref_params, updates)
        np.testing.assert_array_equal(np.asarray(params[0]), np.asarray(ref_params[0]))


# ----------------------------------------------------------- state structure, tracing, jaxpr
def test_state_structure_and_compilations():
    params = [jnp.zeros((6, 3)), jnp.zeros(4)]
    rng = np.random.default_rng(0)

    def sparse(seed):
        idx = np.random.default_rng(seed).integers(0, 6, (NNZ, 1)).astype(np.int32)
        return jsparse.BCOO((jnp.asarray(rng.standard_normal((NNZ, 3)), jnp.float32), jnp.asarray(idx)), shape=(6, 3))

    dense = jnp.ones((6, 3))
    for tx in (ol.sgd(0.1, momentum=0.9), ol.adagrad(0.1), ol.sgd(0.1, maximize=True)):
        state = tx.init(params)
        structure = jax.tree.structure(state)
        step = jit_step(tx)
        p = params
        for g, compiled in [(sparse(1), 1), (sparse(2), 1), (sparse(3), 1), (dense, 2), (sparse(4), 2), (dense, 2)]:
            p, state = step([g, jnp.ones(4)], state, p)
            assert jax.tree.structure(state) == structure
            assert step._cache_size() == compiled  # a new pattern never recompiles
    for cls, config in [(ol.optim.SGD, dict(lr=0.1, momentum=0.9)), (ol.optim.Adagrad, dict(lr=0.1))]:
        opt = cls([jnp.zeros((6, 3)), jnp.zeros(4)], **config)
        traces = []
        for g in (sparse(1), sparse(2), dense, sparse(3), dense, sparse(4)):
            opt.backward([g, jnp.ones(4)])
            opt.step()
            opt.zero_grad()
            traces.append(step_traces())
        # one trace for the sparse layout, one for the dense one, then none
        assert traces[1] == traces[0] and traces[3] == traces[2] == traces[0] + 1 and traces[5] == traces[2]


@pytest.mark.parametrize("config", [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True),
    dict(lr=0.1, momentum=0.9, dampening=0.3),
], ids=str)
def test_sgd_dense_path_is_the_plain_chain(config):
    # dense gradients take the chain itself: the same jaxpr as before sparse support
    plain = chain(
        *([negate()] if config.get("maximize") else []),
        *([add_decayed_weights(config["weight_decay"])] if config.get("weight_decay") else []),
        *([trace(config["momentum"], config.get("dampening", 0), config.get("nesterov", False))]
          if config.get("momentum") else []),
        scale_by_learning_rate(config["lr"]),
    )
    _assert_same_jaxpr(ol.sgd(**config), plain)


@pytest.mark.parametrize("config", [dict(lr=0.1), dict(lr=0.1, lr_decay=0.1, weight_decay=0.1, maximize=True)], ids=str)
def test_adagrad_dense_path_is_the_plain_chain(config):
    plain = chain(
        *([negate()] if config.get("maximize") else []),
        *([add_decayed_weights(config["weight_decay"])] if config.get("weight_decay") else []),
        scale_by_adagrad(config["lr"], config.get("lr_decay", 0), 0, 1e-10),
    )
    _assert_same_jaxpr(ol.adagrad(**config), plain)


def _assert_same_jaxpr(tx, plain):
    params = {"a": jnp.ones((3, 2)), "b": jnp.ones(4), "c": jnp.ones(2, jnp.complex64)}
    state = tx.init(params)
    assert jax.tree.structure(state) == jax.tree.structure(plain.init(params))
    ours = jax.make_jaxpr(lambda g, s, p: tx.update(g, s, p))(params, state, params)
    theirs = jax.make_jaxpr(lambda g, s, p: plain.update(g, s, p))(params, state, params)
    assert str(ours) == str(theirs)
