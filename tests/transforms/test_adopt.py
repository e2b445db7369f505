"""ADOPT's first step and non-finite inputs against live timm (float32): the first step lives in
the step scalars where that is exact (transforms/adopt.py), so it is timm's bit for bit, nan, inf,
-0.0 and overflowing `g / eps` included; and the update without decoupled decay is `-lr * m` itself,
so an inf param stays inf as timm's does. Later steps: the same nan and inf entries, the finite
ones within a few ulps (timm's `addcmul_` may fuse its multiply-add)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_like as ol
from optax_like.registry import import_reference_module

PARAMS = np.array([1.0, -0.0, 0.0, np.inf, 2.0, 3.0, 1e30, -1.0], np.float32)
GRADS = [  # nan, overflow of g / eps, inf, signed zeros at the first step; then finite, then nan
    np.array([np.nan, 1e33, np.inf, 1.0, -0.0, 1e-30, 2.0, 5.0], np.float32),
    np.array([1.0, 2.0, -1.0, 0.5, 1e33, 0.0, -3.0, 1.0], np.float32),
    np.array([0.3, -2.0, 1.0, 0.5, 1.0, 4.0, -3.0, np.nan], np.float32),
]
CONFIGS = {
    "default": {},
    "no_clip": dict(clip_exp=None),
    "decoupled": dict(weight_decay=0.1, decoupled=True),
    "coupled": dict(weight_decay=0.1),
    "caution_no_clip": dict(caution=True, clip_exp=None),
}


@pytest.mark.parametrize("kwargs", CONFIGS.values(), ids=CONFIGS.keys())
def test_first_step_and_non_finite_entries_follow_timm(kwargs):
    torch = pytest.importorskip("torch")
    reference = import_reference_module("timm.optim.adopt").Adopt
    theirs = torch.tensor(PARAMS.copy(), requires_grad=True)
    their_opt = reference([theirs], lr=0.01, **kwargs)
    tx = ol.optimizers.adopt(lr=0.01, **kwargs)
    params = jnp.asarray(PARAMS)
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return ol.apply_updates(params, updates), state

    for t, grads in enumerate(GRADS, 1):
        theirs.grad = torch.tensor(grads)
        their_opt.step()
        params, state = step(params, state, jnp.asarray(grads))
        their_state = their_opt.state[theirs]
        ours = [leaf for leaf in jax.tree.leaves(state) if getattr(leaf, "shape", ()) == PARAMS.shape]
        pairs = {"params": (params, theirs.detach()), "exp_avg": (ours[0], their_state["exp_avg"]),
                 "exp_avg_sq": (ours[1], their_state["exp_avg_sq"])}
        for name, (mine, timms) in pairs.items():
            mine, timms = np.asarray(mine), timms.numpy()
            if t == 1:  # bits (signed zeros and nan payloads included)
                np.testing.assert_array_equal(mine.view(np.uint32), timms.view(np.uint32), err_msg=f"{name}, step {t}")
                continue
            finite = np.isfinite(timms)
            np.testing.assert_array_equal(mine[~finite], timms[~finite], err_msg=f"{name}, step {t}")
            np.testing.assert_array_max_ulp(mine[finite], timms[finite], maxulp=4)


def test_a_loaded_entry_with_step_0_is_refused_and_the_optimizer_is_unchanged():
    """timm's Adopt takes a param with state as past its first step (`len(state) == 0` decides),
    ours knows the first step by `step == 1`: an entry with step 0 (timm never saves one) would
    resume on another path, so it is refused, naming the param and the key."""
    torch = pytest.importorskip("torch")
    reference = import_reference_module("timm.optim.adopt").Adopt
    theirs = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    their_opt = reference([theirs], lr=0.1)
    theirs.grad = torch.tensor([0.5, -1.0], dtype=torch.float64)
    their_opt.step()
    state_dict = their_opt.state_dict()
    state_dict["state"][0]["step"] = torch.tensor(0.0)
    ours = ol.optim.Adopt([jnp.asarray([1.0, 2.0])], lr=0.1)
    ours.grad = [jnp.asarray([0.5, -1.0])]
    ours.step()
    before = ours.state_dict()
    with pytest.raises(ValueError, match=r"param 0: 'step' is 0 in an entry"):
        ours.load_state_dict(state_dict)
    after = ours.state_dict()
    assert float(after["state"][0]["step"]) == float(before["state"][0]["step"]) == 1.0
    np.testing.assert_array_equal(np.asarray(after["state"][0]["exp_avg_sq"]), np.asarray(before["state"][0]["exp_avg_sq"]))
    state_dict["state"][0]["step"] = torch.tensor(1.0)  # timm's own entry loads
    ours.load_state_dict(state_dict)
