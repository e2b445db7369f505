"""optax_like.optim.swa_utils.AveragedModel / update_bn against torch.optim.swa_utils (live)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim import swa_utils as tsu

from optax_like import optim
from optax_like.optim import swa_utils


def _torch_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4, dtype=torch.float64), torch.nn.BatchNorm1d(4, dtype=torch.float64))


def _as_tree(model):
    return {k: jnp.asarray(v.detach().numpy()) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("use_buffers", [False, True])
@pytest.mark.parametrize("kind", ["swa", "ema_multi", "ema"])
def test_averaged_model_matches_torch(x64, use_buffers, kind):
    model = _torch_model()
    kwargs = {"swa": ({}, {}),
              "ema_multi": ({"multi_avg_fn": tsu.get_ema_multi_avg_fn(0.9)}, {"multi_avg_fn": swa_utils.get_ema_multi_avg_fn(0.9)}),
              "ema": ({"avg_fn": tsu.get_ema_avg_fn(0.8)}, {"avg_fn": swa_utils.get_ema_avg_fn(0.8)})}[kind]
    theirs = tsu.AveragedModel(model, use_buffers=use_buffers, **kwargs[0])
    ours = swa_utils.AveragedModel(_as_tree(model), use_buffers=use_buffers, **kwargs[1],
                                   is_buffer=lambda name, leaf: "running" in name or "num_batches" in name)
    x = torch.randn(8, 3, dtype=torch.float64)
    for _ in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()
        model(x)  # moves BatchNorm's running stats (buffers) and num_batches_tracked
        theirs.update_parameters(model)
        ours.update_parameters(_as_tree(model))
    expected = theirs.state_dict()
    got = ours.state_dict()
    assert sorted(got) == sorted(expected) and list(got)[0] == "n_averaged"
    for key, value in expected.items():
        np.testing.assert_allclose(np.asarray(got[key]), value.numpy(), rtol=1e-15, atol=1e-15, err_msg=key)
    assert sorted(p.shape for p in ours.parameters()) == sorted(tuple(p.shape) for p in theirs.parameters())


def test_state_dict_round_trip_and_torchs_state_dict():
    model = _torch_model()
    theirs = tsu.AveragedModel(model)
    theirs.update_parameters(model)
    ours = swa_utils.AveragedModel(jax.tree.map(lambda x: jnp.zeros_like(x), _as_tree(model)))
    ours.load_state_dict(theirs.state_dict())
    assert int(ours.n_averaged) == 1
    np.testing.assert_array_equal(np.asarray(ours.module["0.weight"]), model[0].weight.detach().numpy().astype(np.float32))
    again = swa_utils.AveragedModel(ours.module)
    again.load_state_dict(ours.state_dict())
    assert int(again.n_averaged) == 1


def test_other_structure_is_a_value_error_naming_the_path():
    ours = swa_utils.AveragedModel({"a": jnp.ones(2), "b": {"c": jnp.ones(3)}})
    with pytest.raises(ValueError, match="c"):
        ours.update_parameters({"a": jnp.ones(2), "b": {"d": jnp.ones(3)}})
    with pytest.raises(ValueError, match=r"\['b'\]\['c'\]|shape"):
        ours.update_parameters({"a": jnp.ones(2), "b": {"c": jnp.ones(4)}})
    with pytest.raises(AssertionError, match="Only one of"):
        swa_utils.AveragedModel({"a": jnp.ones(2)}, avg_fn=swa_utils.get_swa_avg_fn(),
                                multi_avg_fn=swa_utils.get_swa_multi_avg_fn())


def test_averaged_model_after_optimizer_steps():
    params = {"w": jnp.ones(3)}
    opt = optim.SGD(params, lr=0.5)
    ema = swa_utils.AveragedModel(opt.params, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.5))
    for _ in range(3):
        opt.step(lambda p: jnp.sum(p["w"]))
        ema.update_parameters(opt.params)
    # params 0.5, 0, -0.5; ema: copy 0.5, then 0.25, then -0.125.
    np.testing.assert_allclose(np.asarray(ema.module["w"]), -0.125)
    assert ema(lambda m, x: jnp.sum(m["w"] * x), 2.0) == pytest.approx(-0.75)


def test_update_bn_recomputes_flax_batchnorm_statistics_as_a_plain_average():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.BatchNorm(4, momentum=0.9, rngs=nnx.Rngs(0)))
    model.eval()
    rng = np.random.default_rng(0)
    batches = [jnp.asarray(rng.standard_normal((5, 3)), jnp.float32) for _ in range(3)]
    swa_utils.update_bn([(b, None) for b in batches], model)
    bn = model.layers[1]
    hidden = [model.layers[0](b) for b in batches]
    np.testing.assert_allclose(np.asarray(bn.mean[...]), np.mean([np.asarray(h).mean(0) for h in hidden], 0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.var[...]), np.mean([np.asarray(h).var(0) for h in hidden], 0), rtol=1e-5)
    assert bn.use_running_average and bn.momentum == 0.9
