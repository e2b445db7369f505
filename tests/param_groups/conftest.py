"""timm.models without timm's package init (which imports torchvision: not installed here)."""

import importlib
import importlib.util
import sys
import types

import pytest


@pytest.fixture(scope="session")
def timm_models():
    """`(timm.models, timm.optim._param_groups, timm.optim._optim_factory)`. timm's package
    `__init__` and `timm.data`'s pull in torchvision; the models need only `timm.data`'s constants
    and one torchvision class name (`FrozenBatchNorm2d`, never instantiated by these models),
    stubbed while timm imports and removed afterwards."""
    pytest.importorskip("torch")
    from optax_like.registry import import_reference_module

    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed")
    import_reference_module("timm.optim")
    timm = sys.modules["timm"]
    root = timm.__path__[0]
    timm.__version__ = "1.0.31"
    import torch

    spec = importlib.util.spec_from_file_location("timm.data.constants", f"{root}/data/constants.py")
    constants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(constants)
    data = types.ModuleType("timm.data")
    data.__path__, data.__package__ = [f"{root}/data"], "timm.data"
    data.__dict__.update({k: v for k, v in vars(constants).items() if k.isupper()})

    class FrozenBatchNorm2d(torch.nn.Module):
        pass

    stubs = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.ops", "torchvision.ops.misc")}
    stubs["torchvision"].__path__ = stubs["torchvision.ops"].__path__ = []
    stubs["torchvision.ops.misc"].FrozenBatchNorm2d = FrozenBatchNorm2d
    installed = [k for k in stubs if k not in sys.modules]
    sys.modules.update({k: stubs[k] for k in installed})
    sys.modules.setdefault("timm.data", data)
    sys.modules.setdefault("timm.data.constants", constants)
    try:
        models = importlib.import_module("timm.models")
        groups = importlib.import_module("timm.optim._param_groups")
        factory = importlib.import_module("timm.optim._optim_factory")
    finally:
        for k in installed:
            sys.modules.pop(k, None)
    return models, groups, factory
