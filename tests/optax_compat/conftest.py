"""optax 0.2.8's tests for the subjects optax_like shares (shim.py): the vendored files in
optax_tests/ are executed by the test_*.py modules beside this file, not collected themselves.
Deliberate differences are strict xfails, listed once in shim.DIFFERENCES."""

import pytest

from tests.optax_compat import shim

collect_ignore = ["optax_tests"]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        relpath = getattr(getattr(item, "module", None), "OPTAX_TEST_FILE", None)
        if relpath is None or item.parent is None:
            continue
        key = shim.test_id(relpath, item.parent.name, item.name)
        if key in shim.DIFFERENCES:
            item.add_marker(pytest.mark.xfail(reason=shim.DIFFERENCES[key], strict=True))
        if key in shim.SLOW:
            item.add_marker(pytest.mark.slow)
        if key in shim.NOT_SHARED_TESTS:
            item.add_marker(pytest.mark.skip(reason=f"not shared: {shim.NOT_SHARED_TESTS[key]}"))
