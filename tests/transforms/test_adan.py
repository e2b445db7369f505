"""timm Adan's beta checks: a triple, each index checked with timm's message (the generic
constructor checks, tests/test_validation.py, take pairs: `betas` must be "a pair" there)."""

import pytest

from tests.test_validation import A, adapter_error, assert_same_error, factory_error, reference_error

BAD_BETAS = [(-0.1, 0.92, 0.99), (0.98, 1.0, 0.99), (0.98, 0.92, 1.5), (A(0.98), A(-0.5), A(0.99))]


@pytest.mark.parametrize("betas", BAD_BETAS, ids=["beta1", "beta2", "beta3", "arrays"])
def test_each_beta_is_checked_with_timms_message(betas):
    theirs = reference_error("adan", dict(betas=betas))
    assert_same_error(factory_error("adan", dict(betas=betas)), theirs, "factory")
    assert_same_error(adapter_error("adan", dict(betas=betas)), theirs, "adapter")


def test_short_betas_raise_timms_index_error_after_checking_the_given_ones():
    assert type(reference_error("adan", dict(betas=(0.98, 0.92)))) is IndexError  # betas[2]
    for ours in (factory_error("adan", dict(betas=(0.98, 0.92))), adapter_error("adan", dict(betas=(0.98, 0.92)))):
        assert type(ours) is IndexError and str(ours).startswith("betas must be a triple (beta1, beta2, beta3)")
    theirs = reference_error("adan", dict(betas=(0.98, 1.2)))  # betas[1] is checked before betas[2] is missed
    assert_same_error(factory_error("adan", dict(betas=(0.98, 1.2))), theirs, "factory")


def test_long_betas_and_wrong_types_are_type_errors():
    for betas in ((0.98, 0.92, 0.99, 0.9), 0.9, ("a", 0.92, 0.99)):
        for ours in (factory_error("adan", dict(betas=betas)), adapter_error("adan", dict(betas=betas))):
            assert type(ours) is TypeError, ours
            assert str(ours).startswith(("betas must be a triple", "betas[0] must be"))


def test_valid_triples_are_accepted():
    for betas in ((0.0, 0.0, 0.0), (0.98, 0.92, 0.99), [0.5, 0.5, 0.5], (A(0.9), A(0.9), A(0.9))):
        assert reference_error("adan", dict(betas=betas)) is None
        assert factory_error("adan", dict(betas=betas)) is None
        assert adapter_error("adan", dict(betas=betas)) is None
