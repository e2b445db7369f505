"""Where timm's `lr_scale` takes effect: optax_like's schedulers (as timm's), the functional
view's lr (a schedule included); never the optimizer alone (as timm's optimizers, timm #2532)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from optax_like import param_groups as pg
from optax_like.optim import grouping, lr_scheduler

NAMED = [("embed.weight", (4, 3)), ("blocks.0.w", (3, 3)), ("blocks.0.b", (3,)), ("blocks.1.w", (3, 3)),
         ("head.weight", (2, 3)), ("head.bias", (2,))]
MATCHER = dict(stem=r"^embed", blocks=r"^blocks\.(\d+)")


def _named(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    return [(n, jnp.asarray(rng.standard_normal(s), dtype)) for n, s in NAMED]


def test_the_optimizer_alone_ignores_lr_scale_as_timms():
    opt = grouping.create_optimizer_v2(_named(), "adamw", lr=1e-2, layer_decay=0.5, group_matcher=MATCHER)
    assert sorted({g["lr_scale"] for g in opt.param_groups}) == [0.125, 0.25, 0.5, 1.0]
    assert {g["lr"] for g in opt.param_groups} == {1e-2}


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_schedulers_write_the_schedule_times_lr_scale_once():
    """Every value the schedulers write is the value they write without `lr_scale`, times it
    (timm's `value * lr_scale`), with two schedulers chained (no double scaling)."""
    scaled = grouping.create_optimizer_v2(_named(), "adamw", lr=1e-2, layer_decay=0.5, group_matcher=MATCHER)
    plain_groups = [{k: v for k, v in g.items() if k != "lr_scale"}
                    for g in pg.param_groups_layer_decay(_named(), layer_decay=0.5, group_matcher=MATCHER)]
    plain = ol.optim.AdamW(plain_groups, lr=1e-2)
    schedulers = []
    for opt in (scaled, plain):
        schedulers.append((lr_scheduler.LambdaLR(opt, lambda e: 0.9 ** e), lr_scheduler.ExponentialLR(opt, gamma=0.5)))
    for _ in range(3):
        for pair in schedulers:
            for sched in pair:
                sched.step()
        for g_scaled, g_plain in zip(scaled.param_groups, plain.param_groups):
            assert g_scaled["lr"] == pytest.approx(g_plain["lr"] * g_scaled["lr_scale"], rel=1e-12)
    assert len({g["lr"] for g in scaled.param_groups}) == 4


def test_functional_view_applies_lr_scale_to_its_schedule():
    """create_optimizer with a schedule == the adapter stepped under LambdaLR (float64)."""
    with jax.enable_x64(True):
        named = _named(jnp.float64)
        schedule = lambda count: 1e-2 * 0.9 ** count
        tx = pg.create_optimizer(named, "adamw", lr=schedule, weight_decay=0.05, layer_decay=0.5, group_matcher=MATCHER)
        opt = grouping.create_optimizer_v2([(n, jnp.array(p)) for n, p in named], "adamw", lr=1e-2, weight_decay=0.05,
                                           layer_decay=0.5, group_matcher=MATCHER)
        sched = lr_scheduler.LambdaLR(opt, lambda e: 0.9 ** e)
        params = dict(named)
        state = tx.init(params)
        rng = np.random.default_rng(1)
        for _ in range(4):
            grads = {n: jnp.asarray(rng.standard_normal(p.shape)) for n, p in params.items()}
            updates, state = tx.update(grads, state, params)
            params = ol.apply_updates(params, updates)
            opt.zero_grad()
            opt.backward([[grads[n] for n in g["param_names"]] for g in opt.param_groups])
            opt.step()
            sched.step()
        ours = {n: p for g, arrays in zip(opt.param_groups, opt.params) for n, p in zip(g["param_names"], arrays)}
        for n, p in params.items():
            np.testing.assert_allclose(np.asarray(p), np.asarray(ours[n]), rtol=1e-12, err_msg=n)
