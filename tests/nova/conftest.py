"""Lets Nova's functional harness run under pytest.

pytest binds the test method on the TestCase instance before running it and
deletes that attribute afterwards; Nova's ``_clear_attrs`` cleanup deletes
every public attribute first, so pytest's own ``delattr`` fails. Keep just
that one attribute.

Nova's functional package monkey-patches eventlet when it is imported;
importing ``nova.test`` first would load oslo.db (and more) before that, and
oslo.db's per-thread transaction state would then be one real thread-local
shared by every greenthread: two greenthreads using the same context (the
resource tracker's) would see each other's transactions ("Can't upgrade a
READER transaction to a WRITER mid-transaction"). Patch first, as Nova's
own test packages do.
"""

from nova import monkey_patch

monkey_patch.patch()

from nova import test as nova_test  # noqa: E402

_nova_clear_attrs = nova_test.TestCase._clear_attrs


def _clear_attrs_keeping_bound_test(self: nova_test.TestCase) -> None:
    bound_test = self.__dict__.get(self._testMethodName)
    _nova_clear_attrs(self)
    if bound_test is not None:
        self.__dict__[self._testMethodName] = bound_test


nova_test.TestCase._clear_attrs = _clear_attrs_keeping_bound_test
