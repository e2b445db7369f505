"""timm's grouping on the named params of real timm models (built in torch for their names,
shapes and matchers only), HF Trainer's grouping, and the timm optimizer-name table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optax_like import param_groups as pg
from optax_like.interop.torch import to_torch_state_dict
from optax_like.optim import grouping

torch = pytest.importorskip("torch")

# vit_tiny by default; the other four (about 30 s together) run with the slow suites
MODELS = ["vit_tiny_patch16_224"] + [pytest.param(name, marks=pytest.mark.slow) for name in
                                     ("resnet18", "convnext_atto", "swin_tiny_patch4_window7_224", "efficientnet_b0")]


@pytest.fixture(scope="module", params=MODELS)
def model(request, timm_models):
    models, _, _ = timm_models
    torch.manual_seed(0)
    return models.create_model(request.param, pretrained=False)


def _named_specs(model):
    return [(n, jax.ShapeDtypeStruct(tuple(p.shape), jnp.float32)) for n, p in model.named_parameters()]


def _timm_view(model, groups):
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [({k: v for k, v in g.items() if k != "params"}, [name_of[id(p)] for p in g["params"]]) for g in groups]


def _our_view(groups):
    return [({k: v for k, v in g.items() if k != "params"}, [n for n, _ in g["params"]]) for g in groups]


def _no_wd(model):
    return set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()


@pytest.mark.parametrize("fallback", [dict(), dict(fallback_list=("*.bias", "head*")),
                                      dict(fallback_list=("head*",), fallback_no_weight_decay=True), dict(weight_decay=0.0)])
def test_weight_decay_groups_match_timm(model, timm_models, fallback):
    _, timm_groups, _ = timm_models
    kwargs = {"weight_decay": 0.05, "no_weight_decay_list": _no_wd(model), **fallback}
    ours = pg.param_groups_weight_decay(_named_specs(model), **kwargs)
    assert _our_view(ours) == _timm_view(model, timm_groups.param_groups_weight_decay(model, **kwargs))


@pytest.mark.parametrize("layer_kwargs", [dict(layer_decay=0.75), dict(layer_decay=0.6, min_scale=0.02), dict(layer_decay=0.6, no_opt_scale=0.05)])
def test_layer_decay_groups_match_timm(model, timm_models, layer_kwargs):
    _, timm_groups, _ = timm_models
    kwargs = dict(weight_decay=0.05, no_weight_decay_list=_no_wd(model), **layer_kwargs)
    ours = pg.param_groups_layer_decay(_named_specs(model), group_matcher=model.group_matcher(coarse=False), **kwargs)
    try:
        expected = _timm_view(model, timm_groups.param_groups_layer_decay(model, **kwargs))
    finally:
        for p in model.parameters():
            p.requires_grad_(True)  # timm freezes params below no_opt_scale
    assert _our_view(ours) == expected
    if "no_opt_scale" in layer_kwargs:
        # the frozen params are exactly those timm froze, and they are in no group
        grouped = {n for _, names in _our_view(ours) for n in names}
        assert len(grouped) < len(list(model.parameters()))


def test_auto_layer_grouping_matches_timm(model, timm_models):
    _, timm_groups, _ = timm_models
    names = [n for n, _ in model.named_parameters()]
    classifier = model.pretrained_cfg.get("classifier")
    assert pg.auto_group_layers(names, classifier=classifier) == timm_groups.auto_group_layers(model)
    assert pg.group_with_matcher(names, model.group_matcher(coarse=True), reverse=True) == \
        timm_groups.group_parameters(model, model.group_matcher(coarse=True), reverse=True)


def test_layer_decay_without_group_matcher_uses_timms_automatic_grouping(timm_models):
    """A model without `group_matcher`: timm cuts its params into layers of 12 in model order,
    the classifier (pretrained_cfg['classifier']) last."""
    _, timm_groups, _ = timm_models
    model = torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(20)])
    model.pretrained_cfg = {"classifier": "19"}
    kwargs = dict(weight_decay=0.05, layer_decay=0.8)
    ours = pg.param_groups_layer_decay(_named_specs(model), classifier="19", **kwargs)
    assert _our_view(ours) == _timm_view(model, timm_groups.param_groups_layer_decay(model, **kwargs))
    assert len({g["lr_scale"] for g in ours}) == 5  # 38 trunk params in layers of 12, 12, 12, 2; the head


def test_create_optimizer_v2_matches_timm(model, timm_models):
    """The adapter's groups: membership by name, weight_decay, lr_scale and every
    hyperparameter as timm's optimizer holds them."""
    _, _, factory = timm_models
    kwargs = dict(opt="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.7)
    theirs = factory.create_optimizer_v2(model, **kwargs)
    named = [(n, jnp.zeros(tuple(p.shape))) for n, p in model.named_parameters()]
    ours = grouping.create_optimizer_v2(named, no_weight_decay_list=_no_wd(model),
                                        group_matcher=model.group_matcher(coarse=False), **kwargs)
    name_of = {id(p): n for n, p in model.named_parameters()}
    assert len(ours.param_groups) == len(theirs.param_groups)
    for g_ours, g_theirs in zip(ours.param_groups, theirs.param_groups):
        assert g_ours["param_names"] == [name_of[id(p)] for p in g_theirs["params"]]
        for key in ("lr", "weight_decay", "lr_scale", "betas", "eps", "amsgrad", "maximize"):
            assert g_ours[key] == g_theirs[key], key


def test_state_dict_round_trip_through_timms_optimizer(timm_models):
    """vit_tiny with layer decay: ours and timm's (torch.optim.AdamW on timm's groups) step on
    the same gradients; ours' state_dict loads into timm's and back, and both continue alike."""
    models, _, factory = timm_models
    torch.manual_seed(0)
    model = models.create_model("vit_tiny_patch16_224", pretrained=False, depth=2)
    kwargs = dict(opt="adamw", lr=1e-2, weight_decay=0.05, layer_decay=0.7)
    theirs = factory.create_optimizer_v2(model, **kwargs)
    named = [(n, jnp.asarray(p.detach().numpy())) for n, p in model.named_parameters()]
    ours = grouping.create_optimizer_v2(named, no_weight_decay_list=_no_wd(model),
                                        group_matcher=model.group_matcher(coarse=False), **kwargs)
    params = [p for _, p in model.named_parameters()]
    rng = np.random.default_rng(0)

    def step(both=True):
        grads = [rng.standard_normal(tuple(p.shape)).astype(np.float32) for p in params]
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        theirs.step()
        ours.zero_grad()
        ours.backward([[jnp.asarray(grads[names.index(n)]) for n in g["param_names"]] for g in ours.param_groups])
        ours.step()

    names = [n for n, _ in model.named_parameters()]
    step()
    sd = ours.state_dict()
    assert [g["param_names"] for g in sd["param_groups"]] == [
        [names[i] for i in range(len(names)) if any(p is params[i] for p in g["params"])] for g in theirs.param_groups]
    theirs.load_state_dict(to_torch_state_dict(ours))  # ours -> torch (same groups, names, positional ids)
    step()
    ours.load_state_dict(theirs.state_dict())  # torch -> ours
    step()
    ours_params = {n: np.asarray(p) for g, arrays in zip(ours.param_groups, ours.params)
                   for n, p in zip(g["param_names"], arrays)}
    for n, p in model.named_parameters():
        np.testing.assert_allclose(ours_params[n], p.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=n)


def test_hf_trainer_grouping(timm_models):
    """HF Trainer's `get_decay_parameter_names` (transformers' code, by module type and name
    patterns) on vit_tiny, whose LayerNorms are named norm1/norm2 (found by type only)."""
    import re

    models, _, _ = timm_models
    model = models.create_model("vit_tiny_patch16_224", pretrained=False, depth=2)
    patterns = [re.compile(p) for p in [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]]

    def get_parameter_names(module, forbidden_layer_types):  # transformers.trainer_pt_utils
        result = []
        for name, child in module.named_children():
            child_params = get_parameter_names(child, forbidden_layer_types)
            result += [f"{name}.{n}" for n in child_params if not isinstance(child, tuple(forbidden_layer_types))
                       and not any(p.search(f"{name}.{n}".lower()) for p in patterns)]
        result += [k for k in module._parameters if not any(p.search(k.lower()) for p in patterns)]
        return result

    decay = get_parameter_names(model, [torch.nn.LayerNorm])
    expected = [[n for n, _ in model.named_parameters() if n in decay], [n for n, _ in model.named_parameters() if n not in decay]]
    layernorms = [n for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)]
    ours = pg.hf_param_groups(_named_specs(model), 0.01, layernorm_modules=layernorms)
    assert [[n for n, _ in g["params"]] for g in ours] == expected
    assert [g["weight_decay"] for g in ours] == [0.01, 0.0]
    assert any(".norm1." in n for n in expected[1])  # the by-type exclusion is exercised


def _reference(cls):
    if isinstance(cls, str):
        return cls
    if cls.__module__.startswith("torch.optim"):
        return "torch.optim." + cls.__name__
    return f"{cls.__module__}.{cls.__name__}"


def test_name_table_is_timms(timm_models):
    _, _, factory = timm_models
    registry = factory.default_registry
    assert set(pg.TIMM_OPTIMIZERS) == set(registry.list_optimizers())
    for name, (reference, accepts, defaults) in pg.TIMM_OPTIMIZERS.items():
        info = registry.get_optimizer_info(name)
        flags = "".join(c for c, v in (("e", info.has_eps), ("m", info.has_momentum), ("b", info.has_betas)) if v)
        assert (reference, accepts, dict(defaults)) == (_reference(info.opt_class), flags, info.defaults or {}), name


def test_every_available_name_builds_timms_configuration(timm_models):
    """For every timm name whose class we have: the constructor arguments timm passes (its
    defaults, momentum, eps/betas dropped) are the ones our class gets."""
    _, _, factory = timm_models
    available = []
    for name in pg.TIMM_OPTIMIZERS:
        try:
            pg.timm_optimizer(name)
        except ValueError:
            continue
        available.append(name)
        lin = torch.nn.Linear(3, 2)
        theirs = factory.create_optimizer_v2(lin, opt=name, lr=0.01, weight_decay=0.02)
        ours = grouping.create_optimizer_v2({"weight": jnp.zeros((2, 3)), "bias": jnp.zeros(2)},
                                            opt=name, lr=0.01, weight_decay=0.02)
        for g_ours, g_theirs in zip(ours.param_groups, theirs.param_groups):
            for key, value in g_theirs.items():
                if key not in ("params", "foreach", "fused", "differentiable", "capturable") and key in g_ours:
                    if isinstance(value, torch.dtype):  # AdafactorBigVision's momentum_dtype: ours a NumPy dtype
                        value = str(value).removeprefix("torch.")
                        assert str(g_ours[key]) == value, (name, key)
                        continue
                    assert g_ours[key] == value, (name, key)
    assert {"sgd", "momentum", "nesterov", "adam", "adamw", "lion", "adopt", "laprop", "clion"} <= set(available)


def test_unavailable_name_is_a_clear_error():
    missing = next(n for n, (ref, _, _) in pg.TIMM_OPTIMIZERS.items() if ref.startswith("apex."))
    with pytest.raises(ValueError, match=f"timm optimizer '{missing}'.*not available.*available: .*adamw"):
        grouping.create_optimizer_v2({"w": jnp.zeros(2)}, opt=missing)
    with pytest.raises(ValueError, match="not found"):
        pg.timm_optimizer("nosuch")


# ------------------------------------------------ a params dict: JAX's sorted order is not the model's
# timm's factory (and torch) numbers a model's params in registration order; a params dict lists them
# in sorted key order. The groups the helpers build from a dict must then load and export a state
# saved without names only by name (source=/target=model), never by position.

_LAYERS = {"l0": r"^(?:z|c|a)\.", "l1": r"^(?:y|d|b)\."}


class _Unsorted(torch.nn.Module):
    """Registered z, c, a, y, d, b (a norm, then two linears, per layer); a params dict lists
    them a, b, c, d, y, z. Each layer opens with a norm, so timm's layer-decay groups come in
    the same order both ways and only the order within a group differs; the params within a
    group have equal shapes, so a positional mix-up would be silent."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        for norm, first, second in (("z", "c", "a"), ("y", "d", "b")):
            setattr(self, norm, torch.nn.LayerNorm(4))
            setattr(self, first, torch.nn.Linear(4, 4))
            setattr(self, second, torch.nn.Linear(4, 4))
        self.double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn_like(p))

    def group_matcher(self, coarse=False):  # what timm's layer decay reads
        return dict(_LAYERS)


def _params_dict(model, nested=False):
    flat = {n: jnp.asarray(p.detach().numpy()) for n, p in model.named_parameters()}
    if not nested:
        return flat
    out = {}
    for n, p in flat.items():
        module, attr = n.split(".")
        out.setdefault(module, {})[attr] = p
    return out


def _grads(model, seed):
    """Gradients by name, a different scale per module (so that a state on the wrong param shows)."""
    rng = np.random.default_rng(seed)
    return {n: (1.0 + 10.0 * "zcaydb".index(n[0])) * rng.standard_normal(tuple(p.shape))
            for n, p in model.named_parameters()}


def _as_tree(grads, params):
    if "z.weight" in params:
        return {n: jnp.asarray(g) for n, g in grads.items()}
    return {m: {a: jnp.asarray(grads[f"{m}.{a}"]) for a in sub} for m, sub in params.items()}


def _step_timm(model, theirs, grads):
    for n, p in model.named_parameters():
        p.grad = torch.tensor(grads[n])
    theirs.step()


def _step_ours(ours, grads, params):
    ours.zero_grad()
    ours.backward(_as_tree(grads, params))
    ours.step()


def _names_of(ours):
    return {n: p for g, arrays in zip(ours.param_groups, ours.params) for n, p in zip(g["param_names"], arrays)} \
        if isinstance(ours.params, list) else dict(pg.named_leaves(ours.params))


_TIMM_KWARGS = [pytest.param(dict(opt="adamw", lr=0.1, weight_decay=0.05), id="weight_decay"),
                pytest.param(dict(opt="adamw", lr=0.1, weight_decay=0.05, layer_decay=0.7), id="layer_decay")]


def _ours_kwargs(kwargs):
    return {**kwargs, "group_matcher": _LAYERS} if "layer_decay" in kwargs else dict(kwargs)


@pytest.mark.parametrize("nested", [False, True], ids=["flat_dict", "nested_dict"])
@pytest.mark.parametrize("kwargs", _TIMM_KWARGS)
def test_create_optimizer_v2_on_a_params_dict_refuses_unnamed_timm_states(timm_models, kwargs, nested, x64):
    """The README's timm port, `create_optimizer_v2(params_dict)`: its groups list the params in
    the dict's sorted order, timm's in registration order. Without the model's names, exporting
    to timm (`to_torch_state_dict(opt)`) and loading timm's state dict (which carries no names)
    are refused, naming the group and the fix, and a refused load leaves the state as it was;
    as `optim.AdamW(params_dict)` does."""
    from optax_like.interop.torch import load_torch_state_dict

    _, _, factory = timm_models
    model = _Unsorted()
    theirs = factory.create_optimizer_v2(model, **kwargs)
    params = _params_dict(model, nested)
    ours = grouping.create_optimizer_v2(params, **_ours_kwargs(kwargs))
    timm_names = _timm_view(model, theirs.param_groups)
    ours_names = _our_view([{**g, "params": list(zip(g["param_names"], g["params"]))} for g in ours.param_groups])
    assert [sorted(n) for _, n in ours_names] == [sorted(n) for _, n in timm_names]  # the same groups ...
    assert [n for _, n in ours_names] != [n for _, n in timm_names]  # ... in another order within them
    grads = _grads(model, 0)
    _step_timm(model, theirs, grads)
    _step_ours(ours, grads, params)
    helper = "param_groups_layer_decay" if "layer_decay" in kwargs else "param_groups_weight_decay"
    with pytest.raises(ValueError, match=rf"param group 0: its params were listed by {helper} in JAX's order "
                                         r"\(the params dict has several keys.*Pass target=model"):
        to_torch_state_dict(ours)
    before = ours.state_dict()
    for load in (ours.load_state_dict, lambda sd: load_torch_state_dict(ours, sd)):
        with pytest.raises(ValueError, match=r"group 0: the loaded param group carries no 'param_names', and its "
                                             rf"params were listed by {helper} in JAX's order.*source=model"):
            load(theirs.state_dict())
        after = ours.state_dict()
        assert after["param_groups"] == before["param_groups"]
        assert after["state"].keys() == before["state"].keys()
        jax.tree.map(np.testing.assert_array_equal, dict(after["state"]), dict(before["state"]))


@pytest.mark.parametrize("kwargs", _TIMM_KWARGS)
@pytest.mark.parametrize("names", ["model", "names"], ids=["model", "name_list"])
def test_create_optimizer_v2_on_a_params_dict_resumes_timm_by_the_models_names(timm_models, kwargs, names, x64):
    """With the model (or its names in registration order), a params dict's optimizer resumes
    from timm's state and timm from ours, both continuing with the same numbers (float64)."""
    from optax_like.interop.torch import load_torch_state_dict

    _, _, factory = timm_models
    theirs_model, ours_model = _Unsorted(), _Unsorted()
    by = lambda m: m if names == "model" else [n for n, _ in m.named_parameters()]

    # ours -> timm: ours steps twice, a fresh timm optimizer on ours' params takes its state
    params = _params_dict(ours_model, nested=True)
    ours = grouping.create_optimizer_v2(params, **_ours_kwargs(kwargs))
    for seed in (1, 2):
        _step_ours(ours, _grads(ours_model, seed), params)
    current = _names_of(ours)
    with torch.no_grad():
        for n, p in theirs_model.named_parameters():
            p.copy_(torch.tensor(np.asarray(current[n])))
    theirs = factory.create_optimizer_v2(theirs_model, **kwargs)
    theirs.load_state_dict(to_torch_state_dict(ours, target=by(theirs_model)))
    grads = _grads(ours_model, 3)
    _step_ours(ours, grads, params)
    _step_timm(theirs_model, theirs, grads)
    current = _names_of(ours)
    for n, p in theirs_model.named_parameters():
        np.testing.assert_allclose(np.asarray(current[n]), p.detach().numpy(), rtol=1e-12, atol=1e-12, err_msg=n)

    # timm -> ours: timm steps twice, a fresh optimizer on timm's params takes timm's state
    model = _Unsorted()
    theirs = factory.create_optimizer_v2(model, **kwargs)
    for seed in (4, 5):
        _step_timm(model, theirs, _grads(model, seed))
    params = _params_dict(model)
    ours = grouping.create_optimizer_v2(params, **_ours_kwargs(kwargs))
    load_torch_state_dict(ours, theirs.state_dict(), source=by(model))
    grads = _grads(model, 6)
    _step_ours(ours, grads, params)
    _step_timm(model, theirs, grads)
    for n, p in model.named_parameters():
        np.testing.assert_allclose(np.asarray(ours.params[n]), p.detach().numpy(), rtol=1e-12, atol=1e-12, err_msg=n)


def _helper_optimizers():
    from optax_like import optim
    from optax_like.core.tree import is_named_pairs
    from optax_like.param_groups import Rule

    def adamw(groups, params):
        return optim.AdamW(groups, lr=0.1, model=None if is_named_pairs(params) else params)

    return {
        "param_groups_weight_decay": lambda p: adamw(pg.param_groups_weight_decay(p, 0.05), p),
        "param_groups_layer_decay": lambda p: adamw(pg.param_groups_layer_decay(
            p, 0.05, layer_decay=0.7, group_matcher=_LAYERS), p),
        "hf_param_groups": lambda p: adamw(pg.hf_param_groups(p, 0.05), p),
        "param_groups.plan": lambda p: grouping.with_rules(
            p, [Rule(ndim=1, set={"weight_decay": 0.0}, name="no_decay")], optim.AdamW, lr=0.1, weight_decay=0.05),
        "create_optimizer_v2": lambda p: grouping.create_optimizer_v2(p, "adamw", lr=0.1, weight_decay=0.05),
    }


@pytest.mark.parametrize("spelling", ["dict", "pairs", "named_parameters"])
@pytest.mark.parametrize("helper", list(_helper_optimizers()))
def test_groups_made_from_a_params_dict_load_unnamed_states_by_name_only(helper, spelling, x64):
    """Every helper that names a params tree for the adapter (timm's and HF's groupings, rules,
    create_optimizer_v2) against torch.optim.AdamW built from the same groups of the model's
    tensors in registration order (torch's state dict then carries no names). From a dict (or
    pairs listed by optim.named_parameters over it) the unnamed state is refused both ways, and
    lands on the params of the same names with source=/target=model; from `(name, param)` pairs
    in the model's order it loads by position, torch's rule, as before."""
    from optax_like.interop.torch import load_torch_state_dict
    from optax_like import optim

    model = _Unsorted()
    params = _params_dict(model)
    if spelling == "pairs":
        params = list(params.items())
    elif spelling == "named_parameters":
        params = list(optim.named_parameters(params))
    if spelling == "named_parameters":  # pairs without model=: the adapter's warning, as before
        with pytest.warns(UserWarning, match="Pass model=tree"):
            ours = _helper_optimizers()[helper](params)
    else:
        ours = _helper_optimizers()[helper](params)
    tensors = dict(model.named_parameters())
    groups = [{"params": [t for n, t in tensors.items() if n in g["param_names"]],
               **{k: v for k, v in g.items() if k in ("weight_decay",)}} for g in ours.param_groups]
    theirs = torch.optim.AdamW(groups, lr=0.1)
    _step_timm(model, theirs, _grads(model, 0))
    saved = theirs.state_dict()
    assert all("param_names" not in g for g in saved["param_groups"])

    def ours_by_name():
        sd = ours.state_dict()
        return {n: sd["state"][i] for g in sd["param_groups"] for n, i in zip(g["param_names"], g["params"])}

    if spelling == "pairs":
        ours.load_state_dict(saved)  # the user's order, the model's: by position
        exported = to_torch_state_dict(ours)
    else:
        lister = "optim.named_parameters" if spelling == "named_parameters" else {
            "create_optimizer_v2": "param_groups_weight_decay"}.get(helper, helper)
        before = ours.state_dict()
        with pytest.raises(ValueError, match=rf"group \d: the loaded param group carries no 'param_names', and "
                                             rf"its params were listed by {lister} in JAX's order.*source=model"):
            ours.load_state_dict(saved)
        assert ours.state_dict()["state"] == before["state"] == {}
        assert ours.state_dict()["param_groups"] == before["param_groups"]
        with pytest.raises(ValueError, match=rf"param group \d: its params were listed by {lister}.*target=model"):
            to_torch_state_dict(ours)
        load_torch_state_dict(ours, saved, source=model)
        exported = to_torch_state_dict(ours, target=model)
    state = ours_by_name()
    for n, t in tensors.items():
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(np.asarray(state[n][key]), theirs.state[t][key].numpy(), err_msg=n)
    fresh = torch.optim.AdamW([{**g, "params": list(g["params"])} for g in groups], lr=0.1)
    fresh.load_state_dict(exported)
    for n, t in tensors.items():
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(fresh.state[t][key], theirs.state[t][key], rtol=0, atol=0, msg=n)


# ------------------------------------------------ layer decay on a params dict: the groups' order
# timm's param_groups_layer_decay makes a group when it meets its first param in
# model.named_parameters(); from a params dict ours meet them in sorted key order ('bias' before
# 'weight'), so the same groups come in another order. With the model's names, the groups are
# matched by the params they hold (torch's order restored both ways); without, refused.

_CROSSED = {"l0": r"^(?:z|a)\.", "l1": r"^(?:y|b)\."}


class _Crossed(torch.nn.Module):
    """Linears registered y, z, a, b: layer 1 (y, b) first, and a weight first in each module;
    a params dict lists a.bias (layer 0, no decay) first. timm's layer-decay groups: [l1 decay,
    l1 no decay, l0 decay, l0 no decay]; ours from the dict: the reverse."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        for name in "yzab":
            setattr(self, name, torch.nn.Linear(4, 4))
        self.double()

    def group_matcher(self, coarse=False):
        return dict(_CROSSED)


def _decay_model(kind):
    """A model whose timm layer-decay groups come in another order than ours from its params
    dict: a bare Linear ({'bias', 'weight'}: one group of one param each, [weight] then [bias]
    in timm's), or `_Crossed`."""
    if kind == "linear":
        torch.manual_seed(2)
        return torch.nn.Linear(4, 4).double()
    return _Crossed()


def _decay_grads(model, seed):
    rng = np.random.default_rng(seed)
    return {n: (1.0 + i) * rng.standard_normal(tuple(p.shape)) for i, (n, p) in enumerate(model.named_parameters())}


def _step_flat(ours, grads):
    ours.zero_grad()
    ours.backward({n: jnp.asarray(g) for n, g in grads.items()})
    ours.step()


def _layer_decay_pair(kind, timm_models, model, named_torch=False):
    """timm's optimizer on `model` (create_optimizer_v2, or with `named_torch` torch's AdamW on
    timm's groups of (name, param) pairs: its state dict carries param_names) and a fresh
    create_optimizer_v2 over `model`'s params dict."""
    kwargs = dict(opt="adamw", lr=0.1, weight_decay=0.05, layer_decay=0.7)
    _, timm_groups, factory = timm_models
    if named_torch:
        name_of = {id(p): n for n, p in model.named_parameters()}
        groups = timm_groups.param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.7)
        theirs = torch.optim.AdamW([{**g, "params": [(name_of[id(p)], p) for p in g["params"]]} for g in groups], lr=0.1)
    else:
        theirs = factory.create_optimizer_v2(model, **kwargs)
    params = {n: jnp.asarray(p.detach().numpy()) for n, p in model.named_parameters()}
    ours = grouping.create_optimizer_v2(params, "adamw", lr=0.1, weight_decay=0.05, layer_decay=0.7,
                                        group_matcher=_CROSSED if kind == "crossed" else None)
    return theirs, ours, params


def _group_entries_by_members(model, ours, theirs):
    """Each group's hyperparameters, keyed by the names of the params it holds: ours and timm's."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    keys = ("lr", "weight_decay", "lr_scale")
    mine = {frozenset(g["param_names"]): {k: g[k] for k in keys} for g in ours.param_groups}
    return mine, {frozenset(name_of[id(p)] for p in g["params"]): {k: g[k] for k in keys} for g in theirs.param_groups}


@pytest.mark.parametrize("names", ["model", "name_list", "named_torch_optimizer"])
@pytest.mark.parametrize("kind", ["linear", "crossed"])
def test_layer_decay_on_a_params_dict_resumes_timm_in_timms_group_order(timm_models, kind, names, x64):
    """create_optimizer_v2(params_dict, layer_decay=...) against timm's: the same groups in
    another order (by their first params: 'bias' before 'weight' in the dict). With the model's
    names (the model, its names in registration order, or a torch optimizer built from timm's
    groups of named params), each group's state and hyperparameters land on the group of the
    same params both ways, and both continue with the same numbers (float64)."""
    named_torch = names == "named_torch_optimizer"
    by = {"model": lambda m, opt: m, "name_list": lambda m, opt: [n for n, _ in m.named_parameters()],
          "named_torch_optimizer": lambda m, opt: opt}[names]
    from optax_like.interop.torch import load_torch_state_dict

    # ours -> timm: ours steps twice, a fresh timm optimizer on ours' params takes its state
    model = _decay_model(kind)
    theirs, ours, params = _layer_decay_pair(kind, timm_models, model, named_torch)
    mine, timms = _group_entries_by_members(model, ours, theirs)
    assert mine == timms  # the same groups ...
    name_of = {id(p): n for n, p in model.named_parameters()}
    assert [g["param_names"][0] for g in ours.param_groups] != [name_of[id(g["params"][0])] for g in theirs.param_groups]
    for seed in (1, 2):
        _step_flat(ours, _decay_grads(model, seed))
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(torch.tensor(np.asarray(ours.params[n])))
    theirs, _, _ = _layer_decay_pair(kind, timm_models, model, named_torch)
    theirs.load_state_dict(to_torch_state_dict(ours, target=by(model, theirs)))
    assert _group_entries_by_members(model, ours, theirs)[1] == mine
    grads = _decay_grads(model, 3)
    _step_flat(ours, grads)
    _step_timm(model, theirs, grads)
    for n, p in model.named_parameters():
        np.testing.assert_allclose(np.asarray(ours.params[n]), p.detach().numpy(), rtol=1e-12, atol=1e-12, err_msg=n)

    # timm -> ours: timm steps twice, a fresh optimizer on timm's params takes timm's state
    model = _decay_model(kind)
    theirs, _, _ = _layer_decay_pair(kind, timm_models, model, named_torch)
    for seed in (4, 5):
        _step_timm(model, theirs, _decay_grads(model, seed))
    _, ours, params = _layer_decay_pair(kind, timm_models, model, named_torch)
    saved = theirs.state_dict()
    assert all(("param_names" in g) == named_torch for g in saved["param_groups"])
    if named_torch:
        load_torch_state_dict(ours, saved)  # named by the saver
    else:
        load_torch_state_dict(ours, saved, source=by(model, theirs))
    mine, timms = _group_entries_by_members(model, ours, theirs)
    assert mine == timms
    grads = _decay_grads(model, 6)
    _step_flat(ours, grads)
    _step_timm(model, theirs, grads)
    for n, p in model.named_parameters():
        np.testing.assert_allclose(np.asarray(ours.params[n]), p.detach().numpy(), rtol=1e-12, atol=1e-12, err_msg=n)


def _assert_unchanged(ours, before):
    after = ours.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert after["state"].keys() == before["state"].keys()
    jax.tree.map(np.testing.assert_array_equal, dict(after["state"]), dict(before["state"]))


def test_layer_decay_groups_of_one_param_from_a_params_dict_refuse_unnamed_states(timm_models, x64):
    """{'bias', 'weight'}: each group holds one param, so no group's own order is in question,
    but the groups' order is JAX's ([bias], [weight]; timm's [weight], [bias]): without the
    model's names, export and load are refused (export was accepted, each group's
    hyperparameters and state on timm's other group), the state untouched."""
    from optax_like.interop.torch import load_torch_state_dict

    model = _decay_model("linear")
    theirs, ours, params = _layer_decay_pair("linear", timm_models, model)
    grads = _decay_grads(model, 0)
    _step_flat(ours, grads)
    _step_timm(model, theirs, grads)
    with pytest.raises(ValueError, match=r"param group 0: param_groups_layer_decay ordered the groups by their first "
                                         r"params in JAX's order \(the params dict has several keys.*Pass target=model"):
        to_torch_state_dict(ours)
    with pytest.raises(ValueError, match=r"param group 0: param_groups_layer_decay ordered the groups"):
        to_torch_state_dict(ours.state_dict())
    before = ours.state_dict()
    for load in (ours.load_state_dict, lambda sd: load_torch_state_dict(ours, sd)):
        with pytest.raises(ValueError, match=r"group 0: the loaded param group carries no 'param_names', and "
                                             r"param_groups_layer_decay ordered the groups.*source=model"):
            load(theirs.state_dict())
        _assert_unchanged(ours, before)
    # ours' own state dict names its params: it loads back (by name) and exports with target=
    ours.load_state_dict(before)
    to_torch_state_dict(ours.state_dict(), target=model)


def test_groups_that_hold_other_params_than_torchs_are_refused_naming_them(timm_models, x64):
    """Where torch's groups (a torch optimizer's named groups, or a state dict's param_names)
    do not each hold exactly the params of one of ours, nothing is guessed: export and load
    raise, naming the groups; the state stays as it was. Against the model's names a timm
    state with other groups (one layer: 2 groups for our 4) is refused too."""
    from optax_like.interop.torch import load_torch_state_dict

    model = _decay_model("crossed")
    _, ours, params = _layer_decay_pair("crossed", timm_models, model)
    by_module = torch.optim.AdamW([{"params": list(getattr(model, m).named_parameters(prefix=m))} for m in "yzab"],
                                  lr=0.1)
    grads = _decay_grads(model, 0)
    _step_flat(ours, grads)
    _step_timm(model, by_module, grads)
    with pytest.raises(ValueError, match=r"the torch optimizer's param group 0 \(\['y.weight', 'y.bias'\]\) holds "
                                         r"params of this optimizer's groups \[2, 3\] but not exactly one of them"):
        to_torch_state_dict(ours, target=by_module)
    before = ours.state_dict()
    with pytest.raises(ValueError, match=r"the loaded state dict's param group 0 \(\['y.weight', 'y.bias'\]\) holds "
                                         r"params of this optimizer's groups \[2, 3\] but not exactly one of them"):
        load_torch_state_dict(ours, by_module.state_dict())
    _assert_unchanged(ours, before)
    # timm's groups of another layer assignment (layer 0: y, z, a): 4 groups of 3, 3, 1, 1 params
    other = _decay_model("crossed")
    other.group_matcher = lambda coarse=False: {"l0": r"^(?:y|z|a)\.", "l1": r"^b\."}
    theirs = timm_models[2].create_optimizer_v2(other, opt="adamw", lr=0.1, weight_decay=0.05, layer_decay=0.7)
    _step_timm(other, theirs, grads)
    with pytest.raises(ValueError, match=r"loaded param group 0 has 3 params, the source names 2 for torch's group 0 "
                                         r"\(this optimizer's group 3, ordered as torch's by the first appearance"):
        load_torch_state_dict(ours, theirs.state_dict(), source=model)
    _assert_unchanged(ours, before)
