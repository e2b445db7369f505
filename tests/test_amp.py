"""`optax_like.amp.GradScaler` against torch.amp.GradScaler("cpu") (issue #27).

Both views of the adapter (explicit gradients: `backward` + `unscale_` + clip + `scaler.step` +
`update`; and the one jitted `optimizer.step(loss_fn, ..., grad_scaler=scaler)`) run torch's AMP
recipe on the same data, with inf/nan injected into chosen batches, and must give torch's scale
and growth tracker after every `update()`, the same skipped steps, torch's params and state:

- float16: float32 master params, the model computed in float16 (torch's autocast recipe); the
  scale 2**16 overflows float16 cotangents in the first steps, as in real training;
- bfloat16: bfloat16 params and gradients (torch unscales them; float16 gradients it refuses);
- float32, and every optimizer class of the registry in float64 (params within 1e-12).

Then: torch's scaler/optimizer state dicts load and continue, the error cases raise torch's
errors (or ours, naming the argument) with the state untouched, and the scheduler interplay.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optax_like as ol
from optax_like import amp, optim, registry

STEPS = 12
BAD_STEPS = {3: np.inf, 7: np.nan}  # batch index -> value injected into that batch


def _data(dtype=np.float32, steps=STEPS, seed=0, bad=BAD_STEPS):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    xs = rng.standard_normal((steps, 8, 4)).astype(dtype)
    ys = (8 * rng.standard_normal((steps, 8, 3))).astype(dtype)  # large errors: float16 cotangents overflow at 2**16
    for k, value in bad.items():
        xs[k, 0, 0] = value
    return {"w": w, "b": b}, xs, ys


def _cast_in(compute):
    """The model: a linear layer, its matmul computed in `compute` (None: the params' dtype), the
    bias added and the loss taken in float32 or wider. (A float16 bias add would make the bias's
    gradient a float16 sum over the batch, whose accumulation order differs between XLA and torch
    by a float16 ulp: a difference of the two frameworks, not of the scaler.)"""
    def loss_fn(params, x, y):
        w, b, xc = params["w"], params["b"], jnp.asarray(x)
        if compute is not None:
            w, xc = w.astype(compute), xc.astype(compute)
        else:
            xc = xc.astype(w.dtype)
        out = xc @ w
        wide = jnp.promote_types(out.dtype, jnp.float32)
        return jnp.mean((out.astype(wide) + b.astype(wide) - y) ** 2)

    def torch_loss(w, b, x, y):
        x = torch.as_tensor(x)
        if compute is not None:
            dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[jnp.dtype(compute).name]
            w, x = w.to(dtype), x.to(dtype)
        else:
            x = x.to(w.dtype)
        out = x @ w
        wide = torch.promote_types(out.dtype, torch.float32)
        return ((out.to(wide) + b.to(wide) - torch.as_tensor(y)) ** 2).mean()

    return loss_fn, torch_loss


def _torch_run(torch_cls, kwargs, params, xs, ys, torch_loss, scaler_kwargs, clip=None, unscale=False,
               param_dtype=None):
    tp = [torch.tensor(np.asarray(params["b"])), torch.tensor(np.asarray(params["w"]))]
    if param_dtype is not None:
        tp = [t.to(param_dtype) for t in tp]
    tp = [torch.nn.Parameter(t) for t in tp]
    opt = torch_cls(tp, **kwargs)
    scaler = torch.amp.GradScaler("cpu", **scaler_kwargs)
    trace = []
    for x, y in zip(xs, ys):
        opt.zero_grad()
        scaler.scale(torch_loss(tp[1], tp[0], x, y)).backward()
        if unscale or clip:
            scaler.unscale_(opt)
        if clip:
            torch.nn.utils.clip_grad_norm_(tp, clip)
        scaler.step(opt)
        scaler.update()
        trace.append((scaler.get_scale(), scaler._get_growth_tracker()))
    return trace, {"b": tp[0].detach(), "w": tp[1].detach()}, opt, scaler


def _ours_run(cls, kwargs, params, xs, ys, loss_fn, scaler_kwargs, clip=None, unscale=False, jitted=False):
    opt = cls({k: jnp.asarray(v) for k, v in params.items()}, **kwargs)
    scaler = amp.GradScaler(**scaler_kwargs)
    trace = []
    for x, y in zip(xs, ys):
        if jitted:
            opt.step(loss_fn, x, y, grad_scaler=scaler, **({"clip_grad_norm": clip} if clip else {}))
        else:
            opt.zero_grad()
            opt.backward(jax.grad(lambda p: scaler.scale(loss_fn(p, x, y)))(opt.params))
            if unscale or clip:
                scaler.unscale_(opt)
            if clip:
                optim.clip_grad_norm_(opt, clip)
            scaler.step(opt)
        scaler.update()
        trace.append((scaler.get_scale(), scaler.get_growth_tracker()))
    return trace, opt.params, opt, scaler


def _max_error(ours, theirs) -> float:
    return max(float(np.max(np.abs(np.asarray(ours[k], np.float64) - theirs[k].double().numpy())))
               for k in ("w", "b"))


SCALER = dict(init_scale=2.0**16, growth_interval=3)


@pytest.mark.parametrize("view", ["explicit", "unscale_", "jitted"])
@pytest.mark.parametrize("cls,kwargs", [("SGD", dict(lr=0.05, momentum=0.9)), ("Adam", dict(lr=0.01))])
def test_float16_compute_matches_torch(view, cls, kwargs):
    """float32 master params, float16 model: the scale overflows at first (natural skips), then
    the injected inf/nan skip; scale trajectory and skips exact, params at torch's (SGD: bit for
    bit; Adam: its float32 parity, a few ulps)."""
    params, xs, ys = _data()
    loss_fn, torch_loss = _cast_in(jnp.float16)
    theirs = _torch_run(getattr(torch.optim, cls), kwargs, params, xs, ys, torch_loss, SCALER,
                        unscale=view == "unscale_")
    ours = _ours_run(getattr(optim, cls), kwargs, params, xs, ys, loss_fn, SCALER, unscale=view == "unscale_",
                     jitted=view == "jitted")
    assert ours[0] == theirs[0]
    assert [s for s, _ in theirs[0]][:2] == [2.0**15, 2.0**14]  # float16 overflow at 2**16 and 2**15
    error = _max_error(ours[1], theirs[1])
    assert error <= 1e-6, error  # float32 parity: SGD 1 ulp (1.2e-7), as without the scaler
    assert ours[2].state_dict()["state"][0]["step" if cls == "Adam" else "momentum_buffer"] is not None
    if cls == "Adam":  # the skipped steps did not count: torch's step
        assert float(ours[2].state_dict()["state"][0]["step"]) == float(theirs[2].state_dict()["state"][0]["step"])


@pytest.mark.parametrize("view", ["explicit", "jitted"])
def test_float16_with_clipping(view):
    """torch's recipe with `unscale_` + `clip_grad_norm_` (jitted: `clip_grad_norm=` in the step,
    after the unscale). The clip's total norm is one float32 ulp off torch's (its reduction
    order), which the float16 forward pass amplifies; the scale trajectory is exact."""
    params, xs, ys = _data()
    loss_fn, torch_loss = _cast_in(jnp.float16)
    kwargs = dict(lr=0.05, momentum=0.9)
    theirs = _torch_run(torch.optim.SGD, kwargs, params, xs, ys, torch_loss, SCALER, clip=0.5)
    ours = _ours_run(optim.SGD, kwargs, params, xs, ys, loss_fn, SCALER, clip=0.5, jitted=view == "jitted")
    assert ours[0] == theirs[0]
    assert _max_error(ours[1], theirs[1]) <= 1e-4


@pytest.mark.parametrize("view", ["explicit", "jitted"])
@pytest.mark.parametrize("cls,kwargs", [("SGD", dict(lr=0.05, momentum=0.9)), ("AdamW", dict(lr=0.01))])
def test_bfloat16_params_match_torch(view, cls, kwargs):
    """bfloat16 params and gradients (torch unscales them in float32 and rounds once)."""
    params, xs, ys = _data()
    loss_fn, torch_loss = _cast_in(None)
    bf16 = {k: jnp.asarray(v, jnp.bfloat16) for k, v in params.items()}
    theirs = _torch_run(getattr(torch.optim, cls), kwargs, params, xs, ys, torch_loss, SCALER,
                        param_dtype=torch.bfloat16)
    ours = _ours_run(getattr(optim, cls), kwargs, bf16, xs, ys, loss_fn, SCALER, jitted=view == "jitted")
    assert ours[0] == theirs[0]
    assert all(v.dtype == jnp.bfloat16 for v in ours[1].values())
    # ulps of bfloat16 (relative, floor 1): ours computes each step in float32 and rounds once,
    # torch rounds after every operation, as without the scaler (tests/test_generic.py's bound)
    ulps = max(float(np.max(np.abs(np.asarray(ours[1][k], np.float64) - theirs[1][k].double().numpy())
                            / np.maximum(np.abs(theirs[1][k].double().numpy()), 1.0))) for k in ("w", "b")) / 2.0**-7
    assert ulps <= 4, ulps


@pytest.mark.parametrize("view", ["explicit", "jitted"])
def test_float32_matches_torch(view):
    params, xs, ys = _data()
    loss_fn, torch_loss = _cast_in(None)
    kwargs = dict(lr=0.01, betas=(0.9, 0.99))
    theirs = _torch_run(torch.optim.Adam, kwargs, params, xs, ys, torch_loss, SCALER)
    ours = _ours_run(optim.Adam, kwargs, params, xs, ys, loss_fn, SCALER, jitted=view == "jitted")
    assert ours[0] == theirs[0]
    assert _max_error(ours[1], theirs[1]) <= 1e-6


RECORDS = {info.cls: info for info in registry.OPTIMIZERS.values()
           if info.groups and not info.closure and info.layout != "sparse"}


@pytest.mark.parametrize("view", ["explicit", "jitted"])
@pytest.mark.parametrize("cls", [pytest.param(cls, marks=(pytest.mark.slow,) if info.slow else ())  # registry's `slow`
                                 for cls, info in RECORDS.items()])
def test_every_class_float64(cls, view, x64):
    """Every optim class (its record's example) under the scaler, float64: params within 1e-12
    of the reference's after every step, its state dict's step counts equal (skips not counted),
    the scale trajectory exact; a skipped step leaves our state dict bit for bit."""
    info = RECORDS[cls]
    params, xs, ys = _data(np.float64)
    loss_fn, torch_loss = _cast_in(None)
    if info.layout == "matrix":  # Muon: 2-D params only; the bias is frozen at 0
        params["b"] = np.zeros(3)
    scaler_kwargs = dict(init_scale=2.0**10, growth_interval=2)
    torch_kwargs = dict(info.example)
    tp = [torch.nn.Parameter(torch.tensor(params["b"])), torch.nn.Parameter(torch.tensor(params["w"]))]
    topt = info.new_reference(tp[1:] if info.layout == "matrix" else tp, **torch_kwargs)
    tscaler = torch.amp.GradScaler("cpu", **scaler_kwargs)
    if info.layout == "matrix":
        opt = info.new_adapter({"w": jnp.asarray(params["w"])}, **info.example)
        loss = lambda p, x, y: loss_fn({"w": p["w"], "b": jnp.zeros(3)}, x, y)  # noqa: E731
    else:
        opt = info.new_adapter({k: jnp.asarray(v) for k, v in params.items()}, **info.example)
        loss = loss_fn
    scaler = amp.GradScaler(**scaler_kwargs)
    for k, (x, y) in enumerate(zip(xs, ys)):
        topt.zero_grad()
        tscaler.scale(torch_loss(tp[1], tp[0], x, y)).backward()
        tscaler.step(topt)
        tscaler.update()
        before = opt.state_dict()["state"]
        if view == "jitted":
            opt.step(loss, x, y, grad_scaler=scaler)
        else:
            opt.zero_grad()
            opt.backward(jax.grad(lambda p: scaler.scale(loss(p, x, y)))(opt.params))
            scaler.step(opt)
        scaler.update()
        assert (scaler.get_scale(), scaler.get_growth_tracker()) == (tscaler.get_scale(), tscaler._get_growth_tracker())
        if k in BAD_STEPS:
            after = opt.state_dict()["state"]
            jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), before, after)
        theirs = tp[1].detach().numpy()
        rtol = info.rtol32 or info.rtol64 or 1e-12  # a record's rtol32 holds in float64 too (test_optim_db)
        np.testing.assert_allclose(np.asarray(opt.params["w"]), theirs, rtol=rtol, atol=rtol)
    ours_sd, theirs_sd = opt.state_dict()["state"], topt.state_dict()["state"]
    for pid, entry in theirs_sd.items():
        if "step" in entry:
            ours_pid = pid if info.layout != "matrix" else 0
            assert float(np.asarray(ours_sd[ours_pid]["step"])) == float(entry["step"])


# ---------------------------------------------------------------------------- state dicts


def test_torch_scaler_state_dict_loads_and_continues():
    """torch's scaler and optimizer state dicts after 6 iterations load into ours; both continue
    to the same scale trajectory and params."""
    params, xs, ys = _data()
    loss_fn, torch_loss = _cast_in(jnp.float16)
    kwargs = dict(lr=0.05, momentum=0.9)
    head = _torch_run(torch.optim.SGD, kwargs, params, xs[:6], ys[:6], torch_loss, SCALER)
    _, tparams, topt, tscaler = head
    sd = tscaler.state_dict()
    assert set(sd) == {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}
    opt = optim.SGD({k: jnp.asarray(v.numpy()) for k, v in tparams.items()}, **kwargs)
    opt.load_state_dict(_by_name(topt.state_dict()))
    scaler = amp.GradScaler()
    scaler.load_state_dict(sd)
    assert scaler.state_dict() == sd
    tp = [p for group in topt.param_groups for p in group["params"]]
    for x, y in zip(xs[6:], ys[6:]):
        topt.zero_grad()
        tscaler.scale(torch_loss(tp[1], tp[0], x, y)).backward()
        tscaler.step(topt)
        tscaler.update()
        opt.step(loss_fn, x, y, grad_scaler=scaler)
        scaler.update()
        assert scaler.state_dict() == tscaler.state_dict()
    assert _max_error(opt.params, {"b": tp[0].detach(), "w": tp[1].detach()}) <= 1e-6


def _by_name(torch_sd):
    """torch's optimizer state dict over [b, w] for our {"b", "w"} tree (sorted: b, w)."""
    sd = copy.deepcopy(torch_sd)
    sd["param_groups"][0]["param_names"] = ["b", "w"]
    return sd


def test_state_dict_round_trip_and_pickle():
    scaler = amp.GradScaler(init_scale=4.0, growth_interval=3)
    assert scaler.state_dict() == {"scale": 4.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                   "growth_interval": 3, "_growth_tracker": 0}
    opt = optim.SGD([jnp.ones(2)], lr=0.1)
    for _ in range(2):
        opt.backward([scaler.scale(jnp.ones(2))])
        scaler.step(opt)
        scaler.update()
    sd = scaler.state_dict()
    assert sd["_growth_tracker"] == 2
    other = amp.GradScaler()
    other.load_state_dict(sd)
    assert other.state_dict() == sd
    copied = pickle.loads(pickle.dumps(scaler))
    assert copied.state_dict() == sd
    opt.backward([scaler.scale(jnp.ones(2))])
    with pytest.raises(AssertionError, match="may only be pickled"):
        scaler.unscale_(opt) or pickle.dumps(scaler)


def test_disabled_scaler_is_a_no_op():
    scaler, tscaler = amp.GradScaler(enabled=False), torch.amp.GradScaler("cpu", enabled=False)
    opt = optim.SGD([jnp.ones(2)], lr=0.5)
    loss = jnp.asarray(3.0)
    assert scaler.scale(loss) is loss
    opt.backward([jnp.ones(2)])
    assert scaler.step(opt) is None
    scaler.update()
    assert scaler.get_scale() == tscaler.get_scale() == 1.0
    assert scaler.state_dict() == tscaler.state_dict() == {}
    assert scaler.get_growth_tracker() == tscaler._get_growth_tracker() == 0
    assert not scaler.is_enabled()
    np.testing.assert_array_equal(np.asarray(opt.params[0]), [0.5, 0.5])
    loss = opt.step(lambda p: jnp.sum(p[0]), grad_scaler=scaler)
    assert float(loss) == 1.0


def test_getters_setters_match_torch():
    ours, theirs = amp.GradScaler(init_scale=8.0), torch.amp.GradScaler("cpu", init_scale=8.0)
    for name, value in (("growth_factor", 3.0), ("backoff_factor", 0.25), ("growth_interval", 7)):
        getattr(ours, f"set_{name}")(value)
        getattr(theirs, f"set_{name}")(value)
        assert getattr(ours, f"get_{name}")() == getattr(theirs, f"get_{name}")() == value
    assert ours.get_scale() == theirs.get_scale() == 8.0  # before the first scale(): init_scale
    ours.scale(jnp.ones(()))
    theirs.scale(torch.ones(()))
    ours.update(new_scale=5.0)
    theirs.update(new_scale=5.0)
    assert ours.state_dict() == theirs.state_dict()
    ours.update(new_scale=jnp.asarray(6.0))
    theirs.update(new_scale=torch.tensor(6.0))
    assert ours.state_dict() == theirs.state_dict()


def test_scale_dtypes_match_torch():
    scaler, tscaler = amp.GradScaler(init_scale=3.0), torch.amp.GradScaler("cpu", init_scale=3.0)
    for dtype, tdtype in ((jnp.float16, torch.float16), (jnp.bfloat16, torch.bfloat16), (jnp.float32, torch.float32)):
        for shape in ((), (2,)):
            x = np.array([1.5, 30000.0], np.float32)[: (2 if shape else 1)].reshape(shape)
            ours = scaler.scale(jnp.asarray(x, dtype))
            theirs = tscaler.scale(torch.tensor(x).to(tdtype))
            assert ours.dtype.name == str(theirs.dtype).removeprefix("torch.")
            np.testing.assert_array_equal(np.asarray(ours, np.float32), theirs.float().numpy())
    out = scaler.scale([jnp.ones(()), (jnp.ones(2),)])
    assert isinstance(out, list) and isinstance(out[1], tuple) and float(out[0]) == 3.0


# ---------------------------------------------------------------------------- errors


def _stepped_pair():
    opt = optim.SGD([jnp.ones(2)], lr=0.1)
    topt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    return opt, topt


def _raises_same(ours, theirs):
    with pytest.raises(Exception) as theirs_info:
        theirs()
    with pytest.raises(type(theirs_info.value)) as ours_info:
        ours()
    assert str(ours_info.value) == str(theirs_info.value)


def test_protocol_errors_match_torch():
    opt, topt = _stepped_pair()
    scaler, tscaler = amp.GradScaler(), torch.amp.GradScaler("cpu")
    # before any scale(): torch's AssertionErrors
    _raises_same(lambda: scaler.step(opt), lambda: tscaler.step(topt))
    _raises_same(lambda: scaler.unscale_(opt), lambda: tscaler.unscale_(topt))
    _raises_same(lambda: scaler.update(), lambda: tscaler.update())
    opt.backward([scaler.scale(jnp.ones(2))])
    tscaler.scale(topt.param_groups[0]["params"][0].sum()).backward()
    scaler.unscale_(opt)
    tscaler.unscale_(topt)
    _raises_same(lambda: scaler.unscale_(opt), lambda: tscaler.unscale_(topt))  # twice
    _raises_same(lambda: scaler.step(opt, closure=lambda: 0), lambda: tscaler.step(topt, closure=lambda: 0))
    scaler.step(opt)
    tscaler.step(topt)
    _raises_same(lambda: scaler.step(opt), lambda: tscaler.step(topt))  # twice
    _raises_same(lambda: scaler.unscale_(opt), lambda: tscaler.unscale_(topt))  # after step
    scaler.update()
    tscaler.update()
    assert scaler.state_dict() == tscaler.state_dict()
    # an optimizer without any gradient: torch's AssertionError at step
    opt.zero_grad()
    topt.zero_grad()
    _raises_same(lambda: scaler.step(opt), lambda: tscaler.step(topt))


def test_unscale_twice_leaves_grads_unscaled_once():
    opt = optim.SGD([jnp.ones(2)], lr=0.1)
    scaler = amp.GradScaler(init_scale=4.0)
    opt.backward([scaler.scale(jnp.ones(2))])
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    np.testing.assert_array_equal(np.asarray(opt.grad[0]), [1.0, 1.0])


def test_float16_gradients_refused_as_torch():
    opt = optim.SGD([jnp.ones(2, jnp.float16)], lr=0.1)
    topt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2, dtype=torch.float16))], lr=0.1)
    scaler, tscaler = amp.GradScaler(), torch.amp.GradScaler("cpu")
    opt.backward([jnp.ones(2, jnp.float16)])
    topt.param_groups[0]["params"][0].grad = torch.ones(2, dtype=torch.float16)
    scaler.scale(jnp.ones(()))
    tscaler.scale(torch.ones(()))
    _raises_same(lambda: scaler.step(opt), lambda: tscaler.step(topt))
    np.testing.assert_array_equal(np.asarray(opt.grad[0]), [1.0, 1.0])  # untouched


def test_closures_refused():
    opt = optim.SGD([jnp.ones(2)], lr=0.1)
    scaler = amp.GradScaler()
    scaler.scale(jnp.ones(()))
    opt.backward([jnp.ones(2)])
    with pytest.raises(RuntimeError, match="grad_scaler=scaler"):
        scaler.step(opt, lambda p: jnp.sum(p[0]))
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="without unscale_"):
        opt.step(lambda p: jnp.sum(p[0]), grad_scaler=scaler)
    lbfgs = optim.LBFGS([jnp.ones(2)])
    with pytest.raises(TypeError, match="grad_scaler"):
        lbfgs.step(lambda p: jnp.sum(p[0] ** 2), grad_scaler=scaler)
    scaler.update(new_scale=1.0)  # (a new iteration)
    with pytest.raises(AssertionError, match="No inf checks"):
        scaler.step(lbfgs)  # no gradient: torch's AssertionError
    scaler.update(new_scale=1.0)  # (torch's unscale_ above marked lbfgs unscaled, as ours did)
    lbfgs.backward([jnp.ones(2)])
    with pytest.raises(TypeError, match="closure"):
        scaler.step(lbfgs)  # torch: LBFGS.step needs its closure, which scaler.step refuses


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(growth_factor=1.0), AssertionError, "The growth factor must be > 1.0."),
    (dict(growth_factor=0.5), AssertionError, "The growth factor must be > 1.0."),
    (dict(backoff_factor=1.0), AssertionError, "The backoff factor must be < 1.0."),
    (dict(backoff_factor=0.0), ValueError, "backoff_factor"),
    (dict(backoff_factor=-0.5), ValueError, "backoff_factor"),
    (dict(init_scale=0.0), ValueError, "init_scale"),
    (dict(init_scale=-2.0), ValueError, "init_scale"),
    (dict(init_scale=float("inf")), ValueError, "init_scale"),
    (dict(init_scale=float("nan")), ValueError, "init_scale"),
    (dict(growth_interval=2.5), TypeError, "growth_interval"),
    (dict(growth_interval=0), ValueError, "growth_interval"),
    (dict(growth_factor=float("nan")), ValueError, "growth_factor"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match.replace(".", r"\.").replace("(", r"\(")):
        amp.GradScaler(**kwargs)
    with pytest.raises(error, match=match.replace(".", r"\.")):
        amp.loss_scaling(ol.sgd(0.1), **kwargs)
    if error is AssertionError:  # torch's own checks: same type and message
        _raises_same(lambda: amp.GradScaler(**kwargs), lambda: torch.amp.GradScaler("cpu", **kwargs))


@pytest.mark.parametrize("entry,value", [("scale", float("inf")), ("scale", float("nan")), ("scale", 0.0),
                                         ("scale", -1.0), ("growth_factor", 1.0), ("backoff_factor", 0.0),
                                         ("growth_interval", 1.5), ("_growth_tracker", -1)])
def test_bad_loaded_state_dict_leaves_the_scaler_untouched(entry, value):
    scaler = amp.GradScaler(init_scale=8.0, growth_interval=5)
    scaler.scale(jnp.ones(()))
    before = scaler.state_dict()
    sd = {**before, entry: value}
    with pytest.raises((ValueError, TypeError, AssertionError), match=entry.lstrip("_").split("_")[0]):
        scaler.load_state_dict(sd)
    assert scaler.state_dict() == before
    with pytest.raises(RuntimeError, match="source state dict is empty"):
        scaler.load_state_dict({})


def test_string_first_argument_names_device():
    with pytest.raises(TypeError, match="device="):
        amp.GradScaler("cuda")
    assert amp.GradScaler(device="cuda").is_enabled()


# ---------------------------------------------------------------------------- schedulers, costs


def test_scheduler_after_skipped_first_step():
    """torch warns at the scheduler's first step when the scaler skipped the optimizer's first
    step; ours calls the step (the skip is decided on device) and does not warn. The learning
    rates agree."""
    params, xs, ys = _data()
    loss_fn, torch_loss = _cast_in(jnp.float16)
    tp = [torch.nn.Parameter(torch.tensor(params["b"])), torch.nn.Parameter(torch.tensor(params["w"]))]
    topt = torch.optim.SGD(tp, lr=0.1)
    tsched = torch.optim.lr_scheduler.StepLR(topt, 1, gamma=0.5)
    tscaler = torch.amp.GradScaler("cpu")
    opt = optim.SGD({k: jnp.asarray(v) for k, v in params.items()}, lr=0.1)
    sched = optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    scaler = amp.GradScaler()
    tscaler.scale(torch_loss(tp[1], tp[0], xs[0], ys[0])).backward()
    tscaler.step(topt)
    tscaler.update()
    with pytest.warns(UserWarning, match="Detected call of `lr_scheduler.step"):
        tsched.step()
    opt.step(loss_fn, xs[0], ys[0], grad_scaler=scaler)
    scaler.update()
    assert scaler.get_scale() == tscaler.get_scale() == 2.0**15  # the first step was skipped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()
    assert sched.get_last_lr() == tsched.get_last_lr()


def test_jitted_scaled_step_compiles_once():
    """The scale, found_inf and the skip are traced: one compile for the scaled step whatever
    the scale, skipped steps included; `update()` one more small one."""
    params, xs, ys = _data()
    loss_fn, _ = _cast_in(jnp.float16)
    opt = optim.SGD({k: jnp.asarray(v) for k, v in params.items()}, lr=0.1)
    scaler = amp.GradScaler(growth_interval=2)
    from optax_like.optim import _step
    opt.step(loss_fn, xs[0], ys[0], grad_scaler=scaler)
    scaler.update()
    before = _step.jitted_step._cache_size()
    for x, y in zip(xs[1:], ys[1:]):
        opt.step(loss_fn, x, y, grad_scaler=scaler)
        scaler.update()
    assert _step.jitted_step._cache_size() == before


def test_two_optimizers_share_one_scaler_as_torch():
    """torch's multiple-optimizer recipe: each optimizer skips on its own gradients' inf/nan,
    `update()` backs off when any of them had one."""
    rng = np.random.default_rng(4)
    a0, b0 = rng.standard_normal(3).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    ta, tb = torch.nn.Parameter(torch.tensor(a0)), torch.nn.Parameter(torch.tensor(b0))
    topt_a, topt_b = torch.optim.SGD([ta], lr=0.1), torch.optim.Adam([tb], lr=0.1)
    tscaler = torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=2)
    opt_a, opt_b = optim.SGD([jnp.asarray(a0)], lr=0.1), optim.Adam([jnp.asarray(b0)], lr=0.1)
    scaler = amp.GradScaler(init_scale=8.0, growth_interval=2)
    for k in range(8):
        bad_a, bad_b = (np.inf if k == 2 else 1.0), (np.nan if k == 5 else 1.0)
        topt_a.zero_grad()
        topt_b.zero_grad()
        tscaler.scale((ta ** 2).sum() * bad_a + (tb ** 3).sum() * bad_b).backward()
        tscaler.step(topt_a)
        tscaler.step(topt_b)
        tscaler.update()
        opt_a.zero_grad()
        opt_b.zero_grad()
        grads = jax.grad(lambda a, b: scaler.scale(jnp.sum(a ** 2) * bad_a + jnp.sum(b ** 3) * bad_b), argnums=(0, 1))(
            opt_a.params[0], opt_b.params[0])
        opt_a.backward([grads[0]])
        opt_b.backward([grads[1]])
        scaler.step(opt_a)
        scaler.step(opt_b)
        scaler.update()
        assert scaler.state_dict() == tscaler.state_dict(), k
        np.testing.assert_allclose(np.asarray(opt_a.params[0]), ta.detach().numpy(), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(opt_b.params[0]), tb.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_sparse_gradients_unscaled_by_their_values():
    """SparseAdam: torch unscales a sparse gradient's values (coalesced); a row-sparse gradient
    with an inf value skips the step."""
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal((6, 3)).astype(np.float32)
    tw = torch.nn.Parameter(torch.tensor(w0))
    topt = torch.optim.SparseAdam([tw], lr=0.1)
    tscaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=2)
    opt = optim.SparseAdam([jnp.asarray(w0)], lr=0.1)
    scaler = amp.GradScaler(init_scale=4.0, growth_interval=2)
    for k in range(6):
        rows = np.array([0, 2, 2, 5])
        values = rng.standard_normal((4, 3)).astype(np.float32)
        if k == 3:
            values[1, 1] = np.inf
        scale = tscaler.get_scale()
        tscaler.scale(torch.ones(()))
        scaler.scale(jnp.ones(()))
        tw.grad = torch.sparse_coo_tensor(torch.tensor(rows)[None], torch.tensor(values * scale), (6, 3))
        tscaler.step(topt)
        tscaler.update()
        opt.zero_grad()
        opt.backward([ol.RowSparseGrad(jnp.asarray(rows), jnp.asarray(values * scale))])
        scaler.step(opt)
        scaler.update()
        assert scaler.state_dict() == tscaler.state_dict(), k
        np.testing.assert_allclose(np.asarray(opt.params[0]), tw.detach().numpy(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------- compact state (issue #27 part 2)


def test_group_moment_dtypes_match_the_functional_form_and_torch():
    """Group options `mu_dtype`/`nu_dtype` (optax's; every class): the group's moments are
    stored in bfloat16, computed in float32 (`compact_state`): torch's Adam with its state
    rounded to bfloat16 after each step; the other group is torch's plain Adam."""
    rng = np.random.default_rng(6)
    w, b = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    grads = [(rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32))
             for _ in range(8)]
    tw, tb = torch.nn.Parameter(torch.tensor(w)), torch.nn.Parameter(torch.tensor(b))
    topt = torch.optim.Adam([{"params": [tw]}, {"params": [tb]}], lr=0.01)
    opt = optim.Adam([{"params": [jnp.asarray(w)], "mu_dtype": "bfloat16", "nu_dtype": "bfloat16"},
                      {"params": [jnp.asarray(b)]}], lr=0.01)
    tx = ol.transforms.mixed_precision.compact_state(ol.adam(0.01), mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16)
    fw, fstate = jnp.asarray(w), tx.init(jnp.asarray(w))
    for gw, gb in grads:
        tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
        topt.step()
        for key in ("exp_avg", "exp_avg_sq"):
            topt.state[tw][key].copy_(topt.state[tw][key].bfloat16().float())
        opt.backward([[jnp.asarray(gw)], [jnp.asarray(gb)]])
        opt.step()
        opt.zero_grad()
        updates, fstate = tx.update(jnp.asarray(gw), fstate, fw)
        fw = ol.apply_updates(fw, updates)
    # (the adapter's traced hyperparameters vs the functional form's constants: float32 ulps)
    np.testing.assert_allclose(np.asarray(opt.params[0][0]), np.asarray(fw), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(opt.params[0][0]), tw.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(opt.params[1][0]), tb.detach().numpy(), rtol=1e-6, atol=1e-6)
    state = opt.state_dict()["state"]
    assert state[0]["exp_avg"].dtype == state[0]["exp_avg_sq"].dtype == jnp.bfloat16
    assert state[1]["exp_avg"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(state[0]["exp_avg"], np.float32), topt.state[tw]["exp_avg"].numpy())
    # torch's state dict (float32 moments, no mu_dtype) loads into the compact group, rounded
    opt.load_state_dict(topt.state_dict())
    assert opt.param_groups[0]["mu_dtype"] == "bfloat16"
    assert opt.state_dict()["state"][0]["exp_avg"].dtype == jnp.bfloat16
    # editing the option converts the state (one recompile), as other compile-time options
    opt.param_groups[0]["nu_dtype"] = None
    opt.backward([[jnp.ones((4, 3))], [jnp.ones(3)]])
    opt.step()
    assert opt.state_dict()["state"][0]["exp_avg_sq"].dtype == jnp.float32
    with pytest.raises(TypeError, match="mu_dtype"):
        opt.add_param_group({"params": [jnp.ones(2)], "mu_dtype": "int8"})


def test_group_stochastic_rounding_of_bfloat16_params():
    """Group option `stochastic_rounding=seed`: bfloat16 params updated with torchao's stochastic
    rounding (`apply_updates_stochastic`, key from the seed, the step count and the group):
    the functional form's numbers, reproducible, continued exactly through state_dict (the step
    count is saved under `stochastic_rounding_count`), and updates of 1/8 ulp move the params
    by their sum on average where round-to-nearest never moves them."""
    from optax_like.transforms.mixed_precision import apply_updates_stochastic

    w = jnp.ones(2048, jnp.bfloat16)
    grad = [[jnp.full(2048, 1.0, jnp.bfloat16)]]  # (a list of groups: a list of group trees)
    lr = 2.0**-7 / 8  # an update of 1/8 ulp at 1.0

    def run(steps, group_option, opt=None):
        opt = opt or optim.SGD([{"params": [jnp.copy(w)], **group_option}], lr=lr)
        for _ in range(steps):
            opt.backward(grad)
            opt.step()
            opt.zero_grad()
        return opt

    sr, again, nearest = run(16, {"stochastic_rounding": 3}), run(16, {"stochastic_rounding": 3}), run(16, {})
    np.testing.assert_array_equal(np.asarray(sr.params[0][0], np.float32), np.asarray(again.params[0][0], np.float32))
    assert np.all(np.asarray(nearest.params[0][0], np.float32) == 1.0)
    moved = 1.0 - float(np.mean(np.asarray(sr.params[0][0], np.float64)))
    assert abs(moved - 16 * lr) < 0.1 * 16 * lr
    # the functional form with the adapter's key
    p = w
    for t in range(16):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(3), t), 0)
        p = apply_updates_stochastic([p], [-lr * jnp.ones(2048, jnp.float32)], key)[0]
    np.testing.assert_array_equal(np.asarray(sr.params[0][0], np.float32), np.asarray(p, np.float32))
    # a resumed optimizer continues the same random stream
    half = run(8, {"stochastic_rounding": 3})
    sd = half.state_dict()
    assert sd["state"]["stochastic_rounding_count"] == 8
    resumed = optim.SGD([{"params": [jnp.copy(half.params[0][0])], "stochastic_rounding": 3}], lr=lr)
    resumed.load_state_dict(sd)
    run(8, {}, resumed)
    np.testing.assert_array_equal(np.asarray(resumed.params[0][0], np.float32), np.asarray(sr.params[0][0], np.float32))
    with pytest.raises(TypeError, match="stochastic_rounding"):
        optim.SGD([{"params": [jnp.copy(w)], "stochastic_rounding": 0.5}], lr=lr)
