"""The registry itself (optax_like/registry.py): every record resolves, matches the exports and
its reference's constructor, and the README's optimizer table is the generated one."""

import inspect
import pathlib

import jax.numpy as jnp
import pytest
import torch

import optax_like
from optax_like import optim, optimizers, registry

RECORDS = list(registry.OPTIMIZERS.values())
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"

# Arguments of ours the reference's constructor does not take, and the reference's we do not
# take, per record: {name: ({ours: reason}, {theirs: reason})}. Besides these, a record's
# `snapshots` entries that the reference's constructor does not take are ours only: timm computes
# `max_lr_snapshot` from lr in its constructor and keeps it in param_groups (corrected weight
# decay divides by it); a factory has no constructor, so it is a keyword argument (None: the lr)
# that the adapter class fills as timm. (Mars's `betas_1d` is timm's argument and a snapshot.)
SIGNATURE_EXCEPTIONS: dict = {
    # timm's SGDP requires lr (torch's `required`); ours defaults to torch.optim.SGD's 1e-3 (the record's deviation)
    "sgdp": ({"lr": "a default where timm requires one"}, {"lr": "torch's `required`"}),
    # timm's Muon reads these from a param group only (not constructor arguments there, nor in optim.TimmMuon's)
    "timm_muon": ({"use_fallback": "a group flag", "use_muon": "a group flag"}, {}),
}


def _arguments(parameters, skip):
    return [(p.name, _default(p.default), p.kind) for p in parameters.values() if p.name not in skip]


def _default(value):
    """A default as compared: a torch dtype (timm's AdafactorBigVision `momentum_dtype=torch.bfloat16`)
    as the jnp dtype of its name, the default ours has."""
    return jnp.dtype(str(value).removeprefix("torch.")) if isinstance(value, torch.dtype) else value


@pytest.mark.parametrize("info", RECORDS, ids=lambda info: info.name)
def test_record_resolves(info):
    assert info.factory is getattr(optax_like, info.name) is getattr(optimizers, info.name)
    cls = info.adapter_class()
    assert cls is getattr(optim, info.cls) and cls.__name__ == info.cls and issubclass(cls, optim.Optimizer)
    reference = info.reference_class()
    assert isinstance(reference, type) and issubclass(reference, torch.optim.Optimizer)
    assert f"{reference.__module__}.{reference.__qualname__}".startswith(info.reference_package)
    assert reference.__name__ == info.reference.rsplit(".", 1)[1]
    for name in info.extra_functions:
        assert callable(getattr(optimizers, name)), name


def test_records_are_the_exported_optimizers():
    """Every factory in `optimizers.__all__` (not its state types, not a record's extra
    functions) has a record, and every class built on `optim.Optimizer` in `optim.__all__` is a
    record's adapter class (wrappers of an optimizer instance, `optim.Lookahead`, are not)."""
    from optax_like.optim.wrappers import WrapperOptimizer

    extra = {f for info in RECORDS for f in info.extra_functions}
    factories = {n for n in optimizers.__all__ if not isinstance(getattr(optimizers, n), type)} - extra
    assert factories == set(registry.OPTIMIZERS)
    classes = {n for n in optim.__all__ if isinstance(getattr(optim, n), type)
               and issubclass(getattr(optim, n), optim.Optimizer) and getattr(optim, n) is not optim.Optimizer
               and not issubclass(getattr(optim, n), WrapperOptimizer)}
    assert classes == {info.cls for info in RECORDS}
    assert len({info.cls for info in RECORDS}) == len(RECORDS)


@pytest.mark.parametrize("info", RECORDS, ids=lambda info: info.name)
def test_example_is_accepted_by_the_reference_and_ours(info):
    params = [torch.zeros(s, requires_grad=True) for s in info.shapes]
    info.reference_class()(params, **info.example)
    info.factory(**info.example)
    info.adapter_class()([jnp.zeros(s) for s in info.shapes], **info.example)


@pytest.mark.parametrize("info", RECORDS, ids=lambda info: info.name)
def test_record_options_are_factory_arguments(info):
    """A misspelt option in a record would only ever reach a factory that rejects it (or a
    table nothing reads): every name a record uses is an argument of the factory."""
    arguments = set(inspect.signature(info.factory).parameters)
    used = {*info.example, *info.full, *info.valid, *info.flags}
    used |= {k for variant in info.variants.values() for k in variant}
    used |= {k for invalid in info.invalid for k in invalid}
    assert used <= arguments, used - arguments


@pytest.mark.parametrize("info", RECORDS, ids=lambda info: info.name)
def test_factory_signature_is_the_references(info):
    """Argument names, order, kinds (keyword-only where the reference's are) and defaults equal
    the reference constructor's (less `params`), but for the listed exceptions."""
    ours_only, theirs_only = SIGNATURE_EXCEPTIONS.get(info.name, ({}, {}))
    reference = inspect.signature(info.reference_class()).parameters
    ours_only = {**ours_only, **dict.fromkeys([k for k in info.adapter.get("snapshots", {}) if k not in reference],
                                              "a snapshot (see above)")}
    if info.adapter.get("group_index"):  # the group's position, which the adapter passes (timm's Kron: its draws)
        ours_only[info.adapter["group_index"]] = "the adapter option group_index"
    ours = _arguments(inspect.signature(info.factory).parameters, ours_only)
    theirs = _arguments(inspect.signature(info.reference_class()).parameters, {"params", *theirs_only})
    assert ours == theirs
    assert set(ours_only) <= set(inspect.signature(info.factory).parameters)
    assert set(theirs_only) <= set(inspect.signature(info.reference_class()).parameters)


def test_optax_counterparts_build():
    optax = pytest.importorskip("optax")
    for info in RECORDS:
        if info.optax is not None:
            tx = eval(info.optax.format(lr=1e-3), {"optax": optax})
            assert callable(tx.init) and callable(tx.update), info.name


def test_readme_table_is_generated():
    """README.md's optimizer table is `registry.markdown_table()`, verbatim (regenerate it with
    `python -c "from optax_like import registry; print(registry.markdown_table())"`)."""
    assert registry.markdown_table() in README.read_text()
