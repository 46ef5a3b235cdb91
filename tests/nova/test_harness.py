"""The harness runs Nova as Nova's own functional tests do."""

import eventlet
from oslo_db.sqlalchemy import enginefacade


def test_oslo_db_transaction_state_is_per_greenthread():
    # Shared state lets two greenthreads that use one context (the
    # resource tracker's) see each other's open transactions.
    state = enginefacade._TransactionContextTLocal()
    state.current = 'reader opened by the test thread'
    seen = eventlet.spawn(getattr, state, 'current', None).wait()
    assert seen is None
