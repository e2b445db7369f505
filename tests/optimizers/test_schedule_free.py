"""schedule_free_adamw / _sgd / _radam against live schedulefree 1.4.1, every step, in both views
(train-mode params y, eval-mode params x), float32 and float64, jit and lax.scan; and
`recalibrate_batch_stats`, schedulefree's BatchNorm recipe (README) end to end against torch."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
schedulefree = pytest.importorskip("schedulefree")

from optax_like.core.base import apply_updates  # noqa: E402
from optax_like.core.leaf_scalars import per_leaf_scalars  # noqa: E402
from optax_like.optimizers.schedule_free import (  # noqa: E402
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_radam,
    schedule_free_sgd,
    schedule_free_train_params,
    schedule_free_wrapper,
)
from optax_like.optimizers.schedule_free import recalibrate_batch_stats  # noqa: E402
from optax_like.optimizers.sgd import sgd  # noqa: E402
from optax_like import optim  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REFERENCES = {
    "adamw": (schedulefree.AdamWScheduleFree, schedule_free_adamw),
    "sgd": (schedulefree.SGDScheduleFree, schedule_free_sgd),
    "radam": (schedulefree.RAdamScheduleFree, schedule_free_radam),
}

CONFIGS = [
    ("adamw", {}),
    ("adamw", dict(lr=0.01, warmup_steps=20, r=0.5, weight_decay=0.01)),
    ("adamw", dict(lr=0.01, warmup_steps=10, weight_lr_power=0.0, weight_decay=0.1)),
    ("sgd", dict(lr=0.1, warmup_steps=15, r=1.0, weight_decay=1e-3)),
    ("radam", dict(r=0.5, weight_decay=0.01)),
    ("radam", dict(silent_sgd_phase=False)),
]
SHAPES = ((33,), (4, 6))


def _close(a, b, dtype, ulps=4):
    """float64: 1e-12 relative (floor 1); float32/bf16: `ulps` ulps of the tensor's largest
    value (torch's MKL sqrt is not correctly rounded on ~0.7% of float32 inputs, and
    `y + (y' - y)` cannot reach y' where y' is far smaller than y: both move a few elements
    by an ulp, which later steps carry)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if dtype == "float64":
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * max(1.0, np.max(np.abs(b))))
        return
    scale = np.max(np.abs(b))
    unit = float(np.spacing(np.float32(scale))) if dtype == "float32" else scale * 2.0**-7
    assert np.max(np.abs(a - b)) <= ulps * unit, (np.max(np.abs(a - b)) / unit, "ulps")


def _torch_dtype(dtype):
    return {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}[dtype]


def _run(kind, kw, dtype, steps, *, chunk=None, none_leaf=None, foreach=False, seed=0, ulps=4):
    """Steps schedulefree and ours on the same gradients; checks y every step and x at the end.
    `chunk`: steps per jitted `lax.scan` (None: one jitted step per call). `none_leaf(t)`: the
    leaf whose gradient is None at step t (or None)."""
    cls, factory = REFERENCES[kind]
    rng = np.random.default_rng(seed)
    np_dtype = np.float64 if dtype == "float64" else np.float32
    init = [rng.standard_normal(s).astype(np_dtype) for s in SHAPES]
    t_params = [torch.tensor(p, dtype=_torch_dtype(dtype)).requires_grad_() for p in init]
    ref = cls(t_params, foreach=foreach, **kw)
    ref.train()
    tx = factory(**kw)
    params = [jnp.asarray(t.detach().float().numpy() if dtype == "bfloat16" else t.detach().numpy()).astype(
        jnp.bfloat16 if dtype == "bfloat16" else np_dtype) for t in t_params]
    state = tx.init(params)
    if none_leaf is not None:
        state = per_leaf_scalars(state)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return apply_updates(params, updates), state

    @jax.jit
    def scan(params, state, grads):
        def body(carry, g):
            p, s = carry
            u, s = tx.update(list(g), s, p)
            p = apply_updates(p, u)
            return (p, s), p
        (p, s), trajectory = jax.lax.scan(body, (params, state), grads)
        return p, s, trajectory

    def check(ours):
        for a, t in zip(ours, t_params):
            _close(np.asarray(a, np.float64), t.detach().double().numpy(), dtype, ulps)

    grads = [[rng.standard_normal(s).astype(np_dtype) for s in SHAPES] for _ in range(steps)]
    for start in range(0, steps, chunk or 1):
        block = grads[start:start + (chunk or 1)]
        if chunk:
            params, state, trajectory = scan(params, state, tuple(jnp.asarray(np.stack(g)) for g in zip(*block)))
        for i, g in enumerate(block):
            t = start + i
            skip = none_leaf(t) if none_leaf else None
            for j, (p, gj) in enumerate(zip(t_params, g)):
                p.grad = None if j == skip else torch.tensor(gj, dtype=_torch_dtype(dtype))
            ref.step()
            if not chunk:
                ours_g = [None if j == skip else jnp.asarray(gj).astype(params[j].dtype) for j, gj in enumerate(g)]
                params, state = step(params, state, ours_g)
                check(params)
            else:
                check([traj[i] for traj in trajectory])
    # eval view (x), then back (y)
    x = schedule_free_eval_params(state, params)
    ref.eval()
    check(x)
    y = schedule_free_train_params(state, x)
    ref.train()
    check(y)
    return params, state, ref, t_params


@pytest.mark.parametrize("kind,kw", [CONFIGS[1], CONFIGS[2], CONFIGS[3], CONFIGS[5]], ids=lambda c: str(c))
def test_parity_float32_scan(kind, kw):
    _run(kind, kw, "float32", 40, chunk=20)


@pytest.mark.parametrize("kind,kw", [CONFIGS[1], CONFIGS[3], CONFIGS[4]], ids=lambda c: str(c))
def test_parity_float64(kind, kw, x64):
    _run(kind, kw, "float64", 40, chunk=20)


def test_parity_jitted_single_steps_and_float32_bits():
    """One jitted step per call; most elements are bit-for-bit schedulefree's."""
    params, _, _, t_params = _run("adamw", dict(lr=0.01, warmup_steps=5, weight_decay=0.01), "float32", 25)
    same = np.mean([np.mean(np.asarray(a) == t.detach().numpy()) for a, t in zip(params, t_params)])
    assert same > 0.9, same


def test_none_gradients_skip_leaf_but_advance_k(x64):
    """schedulefree skips `p.grad is None` params (z, exp_avg_sq untouched) while k and
    weight_sum advance; a param never stepped keeps no z and eval/train leave it alone."""
    _run("adamw", dict(warmup_steps=3, weight_decay=0.1), "float64", 12, none_leaf=lambda t: t % 3)
    _run("sgd", dict(lr=0.1), "float64", 8, none_leaf=lambda t: 1)  # leaf 1 never stepped


def test_none_gradient_on_the_first_steps_float32():
    _run("adamw", dict(warmup_steps=4), "float32", 10, none_leaf=lambda t: 0 if t < 3 else None)


def test_bfloat16_params():
    _run("adamw", dict(lr=0.01, weight_decay=0.01), "bfloat16", 12)


def test_reference_foreach_path_agrees():
    """schedulefree's foreach kernels give the same numbers as its single-tensor loop (to the
    same few ulps): checked against ours."""
    _run("adamw", dict(lr=0.01, warmup_steps=5, r=1.0, weight_decay=0.01), "float32", 30, chunk=30, foreach=True)


def test_schedule_lr_matches_changing_group_lr():
    """An lr schedule here = schedulefree with `group['lr']` set before each step (what a torch
    scheduler does): lr_max and the weights follow the lr actually used."""
    sched = lambda k: 0.01 * (0.5 + 0.5 * jnp.cos(jnp.pi * jnp.minimum(k, 40) / 40))
    rng = np.random.default_rng(3)
    init = rng.standard_normal(17).astype(np.float32)
    tp = torch.tensor(init).requires_grad_()
    ref = schedulefree.AdamWScheduleFree([tp], foreach=False, warmup_steps=5)
    ref.train()
    tx = schedule_free_adamw(lr=sched, warmup_steps=5)
    p = jnp.asarray(init)
    s = tx.init(p)
    step = jax.jit(lambda p, s, g: (lambda u, s: (apply_updates(p, u), s))(*tx.update(g, s, p)))
    for k in range(50):
        g = rng.standard_normal(17).astype(np.float32)
        ref.param_groups[0]["lr"] = float(sched(jnp.asarray(k, jnp.int32)))
        tp.grad = torch.tensor(g)
        ref.step()
        p, s = step(p, s, jnp.asarray(g))
        _close(p, tp.detach().numpy(), "float32")


@pytest.mark.parametrize("kw", [dict(lr=-1.0), dict(weight_decay=-0.5), dict(momentum=0.0), dict(momentum=1.0),
                                dict(momentum=1.5), dict(momentum=-0.1)])
def test_sgd_validation_messages(kw):
    with pytest.raises(Exception) as expected:
        schedulefree.SGDScheduleFree([torch.zeros(2, requires_grad=True)], **kw)
    with pytest.raises(type(expected.value), match=f"^{expected.value!s}$".replace("(", r"\(").replace(")", r"\)")):
        schedule_free_sgd(**kw)


@pytest.mark.parametrize("kind", ["adamw", "radam"])
def test_adam_variants_validate_nothing_like_schedulefree(kind):
    cls, factory = REFERENCES[kind]
    kw = dict(lr=-1.0, betas=(1.5, -2.0), eps=-1.0, weight_decay=-1.0)
    cls([torch.zeros(2, requires_grad=True)], **kw)  # no error there
    factory(**kw)  # nor here


def test_signatures_match_reference():
    import inspect
    for kind, (cls, factory) in REFERENCES.items():
        ref = list(inspect.signature(cls.__init__).parameters.items())[2:]
        ours = list(inspect.signature(factory).parameters.items())
        assert [n for n, _ in ref] == [n for n, _ in ours], kind
        for (n, a), (_, b) in zip(ref, ours):
            if n != "foreach":
                assert a.default == b.default, (kind, n)


@pytest.mark.parametrize("kw,base_kw", [
    (dict(weight_decay_at_y=0.1, r=1.0), dict(lr=0.01, momentum=0.5, weight_decay=1e-3)),
    (dict(momentum=0.8, weight_lr_power=0, r=0.5), dict(lr=0.05)),
], ids=str)
def test_wrapper_parity(kw, base_kw, parity_dtype):
    """ScheduleFreeWrapper around torch's SGD vs ours around `sgd` (schedulefree's wrapper puts
    'z' in the base's state dicts, which breaks bases that initialise on `len(state) == 0`,
    e.g. torch's Adam and RMSprop: SGD is the torch base it runs with)."""
    np_dtype = np.float64 if parity_dtype == "float64" else np.float32
    rng = np.random.default_rng(5)
    init = [rng.standard_normal(s).astype(np_dtype) for s in SHAPES]
    tp = [torch.tensor(p).requires_grad_() for p in init]
    ref = schedulefree.ScheduleFreeWrapper(torch.optim.SGD(tp, foreach=False, **base_kw), **kw)
    ref.train()
    tx = schedule_free_wrapper(sgd(**base_kw), lr=base_kw["lr"], **kw)
    params = [jnp.asarray(p) for p in init]
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: (lambda u, s: (apply_updates(p, u), s))(*tx.update(g, s, p)))
    for _ in range(25):
        g = [rng.standard_normal(s).astype(np_dtype) for s in SHAPES]
        for p, gj in zip(tp, g):
            p.grad = torch.tensor(gj)
        ref.step()
        params, state = step(params, state, [jnp.asarray(gj) for gj in g])
        for a, p in zip(params, tp):
            _close(a, p.detach().numpy(), parity_dtype, ulps=1)
    ref.eval()
    for a, p in zip(schedule_free_eval_params(state, params), tp):
        _close(a, p.detach().numpy(), parity_dtype, ulps=1)


@pytest.mark.slow
@pytest.mark.parametrize("kind,kw", [
    ("adamw", dict(lr=0.01, warmup_steps=100, r=0.5, weight_decay=0.01)),
    ("adamw", dict(lr=0.01, warmup_steps=50, weight_lr_power=0.0, weight_decay=0.1)),
    ("sgd", dict(lr=0.1, warmup_steps=30, r=1.0, weight_decay=1e-3)),
    ("radam", dict(r=0.5, weight_decay=0.01)),
], ids=lambda c: str(c))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_long_run_10k_steps(kind, kw, dtype):
    """Measured (checked every step): float32 within 1.5-8 ulps of the largest param (the four
    configurations: 2, 8, 3, 1.5; torch's fused multiply-adds are plain `a * b + c` here, see
    transforms/schedule_free.py `_fma`; an exact emulation gave 0.5-3 at 1.8x the step time),
    float64 within ~1e-15 of it (elements that cross zero have larger relative errors)."""
    if dtype == "float64":
        with jax.enable_x64(True):
            _run(kind, kw, dtype, 10_000, chunk=1000)
    else:
        _run(kind, kw, dtype, 10_000, chunk=1000, ulps=16)


# --------------------------------------------------------------------------- BatchNorm recipe
BN_MOMENTUM = 0.1  # torch's BatchNorm default


def _bn_update(params, stats, x):
    """torch's BatchNorm1d running statistics after one train-mode forward pass of Linear -> BN
    (running_var takes the unbiased batch variance)."""
    h = x @ params["w"].T + params["b"]
    mean, var = jnp.mean(h, axis=0), jnp.var(h, axis=0, ddof=1)
    return {"mean": (1 - BN_MOMENTUM) * stats["mean"] + BN_MOMENTUM * mean,
            "var": (1 - BN_MOMENTUM) * stats["var"] + BN_MOMENTUM * var}


def test_recalibrated_stats_at_eval_params_match_torchs_recipe(x64):
    rng = np.random.default_rng(0)
    w0, b0 = rng.standard_normal((4, 3)), rng.standard_normal(4)
    batches = [rng.standard_normal((8, 3)) for _ in range(6)]
    lin, bn = torch.nn.Linear(3, 4).double(), torch.nn.BatchNorm1d(4).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w0))
        lin.bias.copy_(torch.tensor(b0))
    ref = schedulefree.SGDScheduleFree(lin.parameters(), lr=0.1, momentum=0.9)
    ours = optim.SGDScheduleFree({"w": jnp.asarray(w0), "b": jnp.asarray(b0)}, lr=0.1, momentum=0.9)
    ref.train()
    ours.train()
    for t in range(3):  # a few steps on a loss of the linear layer alone
        g = rng.standard_normal((4, 3)), rng.standard_normal(4)
        lin.weight.grad, lin.bias.grad = torch.tensor(g[0]), torch.tensor(g[1])
        ref.step()
        ours.zero_grad()
        ours.backward({"w": jnp.asarray(g[0]), "b": jnp.asarray(g[1])})
        ours.step()
    # the recipe: model.train(); optimizer.eval(); forward passes without gradients; model.eval()
    ref.eval()
    ours.eval()
    bn.train()
    with torch.no_grad():
        for x in itertools.islice(batches, 4):
            bn(lin(torch.tensor(x)))
    stats = recalibrate_batch_stats(_bn_update, ours.params,
                                       {"mean": jnp.zeros(4, jnp.float64), "var": jnp.ones(4, jnp.float64)},
                                       iter(jnp.asarray(x) for x in batches), num_batches=4)
    np.testing.assert_allclose(np.asarray(stats["mean"]), bn.running_mean.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(stats["var"]), bn.running_var.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(ours.params["w"]), lin.weight.detach().numpy(), rtol=1e-12)


def test_the_functional_eval_params_and_num_batches():
    tx = schedule_free_sgd(lr=0.1)
    params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(4)}
    state = tx.init(params)
    updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    params = apply_updates(params, updates)
    x = schedule_free_eval_params(state, params)
    seen = []

    def count(p, s, batch):
        jax.debug.callback(lambda b: seen.append(float(b)), batch)
        return {"n": s["n"] + 1}

    out = recalibrate_batch_stats(count, x, {"n": jnp.zeros((), jnp.int32)}, (jnp.asarray(float(i)) for i in range(9)),
                                     num_batches=5)
    assert int(out["n"]) == 5 and seen == [0.0, 1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="num_batches"):
        recalibrate_batch_stats(count, x, {"n": 0}, [], num_batches=-1)
