"""Lets Nova's functional harness run under pytest.

pytest binds the test method on the TestCase instance before running it and
deletes that attribute afterwards; Nova's ``_clear_attrs`` cleanup deletes
every public attribute first, so pytest's own ``delattr`` fails. Keep just
that one attribute.
"""

from nova import test as nova_test

_nova_clear_attrs = nova_test.TestCase._clear_attrs


def _clear_attrs_keeping_bound_test(self: nova_test.TestCase) -> None:
    bound_test = self.__dict__.get(self._testMethodName)
    _nova_clear_attrs(self)
    if bound_test is not None:
        self.__dict__[self._testMethodName] = bound_test


nova_test.TestCase._clear_attrs = _clear_attrs_keeping_bound_test
