"""optax_like.optim.grouping: the adapter's rules and timm factory (no torch needed here;
torch and timm parity: tests/param_groups/)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_like import optim
from optax_like.optim import grouping
from optax_like.param_groups import Rule


def _tree():
    k = iter(jax.random.split(jax.random.PRNGKey(0), 10))
    return {"embed": {"weight": jax.random.normal(next(k), (5, 4))},
            "blocks": [{"w": jax.random.normal(next(k), (4, 4)), "b": jax.random.normal(next(k), (4,))} for _ in range(3)],
            "head": {"weight": jax.random.normal(next(k), (2, 4)), "bias": jax.random.normal(next(k), (2,))}}


def test_create_optimizer_v2_on_a_tree_freezes_what_timm_freezes():
    """A params pytree is the model: layers whose scale is below no_opt_scale are in no group
    (timm sets requires_grad=False) and stay untouched in optimizer.params."""
    params = _tree()
    before = jax.tree.map(np.asarray, params)
    matcher = dict(stem=r"^embed", blocks=r"^blocks\.(\d+)")
    opt = grouping.create_optimizer_v2(params, "sgd", lr=0.1, weight_decay=1e-4, layer_decay=0.5,
                                       layer_decay_no_opt_scale=0.2, group_matcher=matcher)
    named = [n for g in opt.param_groups for n in g["param_names"]]
    assert "embed.weight" not in named and "blocks.0.w" not in named  # scales 1/32 and 1/16
    assert opt.param_groups[0]["nesterov"] is True and opt.param_groups[0]["momentum"] == 0.9  # timm's 'sgd'
    opt.step(lambda p: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p)))
    after = opt.params
    np.testing.assert_array_equal(after["embed"]["weight"], before["embed"]["weight"])
    np.testing.assert_array_equal(after["blocks"][0]["w"], before["blocks"][0]["w"])
    assert not np.array_equal(after["head"]["weight"], before["head"]["weight"])


def test_routed_optimizers_take_their_gradients_by_name():
    params = _tree()
    opts = grouping.with_rules(params, [Rule("blocks.*", ndim=2, optimizer="muon")], optim.AdamW, lr=1e-2,
                               routes={"muon": (optim.Muon, {"lr": 0.02})})
    grads = jax.tree.map(jnp.ones_like, params)
    for opt in opts.values():
        opt.backward(grouping.in_groups(opt, grads))
        opt.step()
    assert [g["param_names"] for g in opts["muon"].param_groups] == [["blocks.0.w", "blocks.1.w", "blocks.2.w"]]
    assert len(opts["muon"].state_dict()["state"]) == 3 and len(opts["default"].state_dict()["state"]) == 6
    with pytest.raises(KeyError, match="not in the tree"):
        grouping.in_groups(opts["muon"], {"other": jnp.zeros(2)})


def test_timm_names_without_our_class_are_errors_naming_them():
    from optax_like import param_groups, registry

    ours = {info.reference for info in registry.OPTIMIZERS.values()}
    missing = [(n, ref) for n, (ref, _, _) in param_groups.TIMM_OPTIMIZERS.items() if ref not in ours]
    name, reference = missing[0]
    with pytest.raises(ValueError, match=rf"timm optimizer '{name}' \({reference}\) is not available.*available: .*adamw"):
        grouping.create_optimizer_v2(_tree(), name)


def test_torch_groups_pass_through_and_adapter_options():
    from optax_like import param_groups as pg

    named = [("a.w", jnp.ones((2, 2))), ("a.b", jnp.ones(2))]
    groups = [{"params": [named[0]], "weight_decay": 0.1}, {"params": [named[1]], "lr": 0.5}]
    opt = grouping.create_optimizer_v2(groups, "adamw", lr=0.01, skip_nonfinite=True)
    assert [(g["param_names"], g["weight_decay"], g["lr"]) for g in opt.param_groups] == [
        (["a.w"], 0.1, 0.01), (["a.b"], 0.0, 0.5)]
    assert opt.skip_nonfinite is True
    tx = pg.create_optimizer(groups, "adamw", lr=0.01)  # functional: the same groups
    params = dict(named)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    assert float(updates["a.b"][0]) == pytest.approx(-0.5, rel=1e-5)


def test_a_list_of_arrays_passes_through_ungrouped_as_in_timm():
    """timm groups a model only: `create_optimizer_v2(model.parameters(), ...)` (a list of
    tensors) gives one group with the weight decay for every param, 1-D ones included."""
    from optax_like import param_groups as pg

    arrays = [jnp.ones((3, 2)), jnp.ones(2)]
    opt = grouping.create_optimizer_v2([jnp.array(a) for a in arrays], "adamw", lr=0.1, weight_decay=0.5)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.5
    tx = pg.create_optimizer(arrays, "adamw", lr=0.1, weight_decay=0.5)
    updates, _ = tx.update([jnp.zeros((3, 2)), jnp.zeros(2)], tx.init(arrays), arrays)
    opt.backward([jnp.zeros((3, 2)), jnp.zeros(2)])
    opt.step()
    np.testing.assert_allclose(np.asarray(updates[1]), -0.1 * 0.5 * np.ones(2), rtol=1e-6)  # decayed
    np.testing.assert_allclose(np.asarray(opt.params[1]), arrays[1] + updates[1], rtol=1e-6)
