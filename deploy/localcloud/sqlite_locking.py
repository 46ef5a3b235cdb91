"""Make SQLite safe for the many threads of one OpenStack service process.

oslo.db drives SQLite transactions itself: it switches pysqlite's own
transaction handling off and emits a plain (deferred) ``BEGIN``.  A deferred
transaction that has read and then writes finds, when another thread wrote
in between, that its snapshot is stale, and SQLite fails it at once with
"database is locked" instead of waiting.  Beginning every transaction with
``BEGIN IMMEDIATE`` takes the write lock up front, waiting up to the busy
timeout (the URL's ``timeout``), so writers queue instead of failing;
readers are not blocked since the files are in WAL mode.  MariaDB needs
none of this.
"""

from sqlalchemy import event
from sqlalchemy.engine import Engine

_installed = False


def _begin_immediate(connection) -> None:
    # Class-level listeners run before the per-engine one oslo.db adds,
    # which then sees the marker it sets itself and emits nothing.
    if (connection.dialect.name == "sqlite"
            and "in_transaction" not in connection.info):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        connection.info["in_transaction"] = True


def serialize_sqlite_writers() -> None:
    """Install the listener on every engine this process will create."""
    global _installed
    if not _installed:
        event.listen(Engine, "begin", _begin_immediate)
        _installed = True
