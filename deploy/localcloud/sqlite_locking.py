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

One exception: a transaction that a thread opens on a second connection
while its own outer transaction holds the write lock (oslo.db's
``reader.independent``, as Placement does to re-read a provider's
generation after a conflict) would wait on itself until the timeout.  It
begins deferred instead and reads its WAL snapshot.
"""

import threading

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import ConnectionPoolEntry, Pool

_installed = False
_held = threading.local()


def _write_locks_held() -> set[str]:
    if not hasattr(_held, "databases"):
        _held.databases = set()
    return _held.databases


def _begin(connection: Connection) -> None:
    # Class-level listeners run before the per-engine one oslo.db adds,
    # which then sees the marker it sets itself and emits nothing.
    if (connection.dialect.name != "sqlite"
            or "in_transaction" in connection.info):
        return
    database = str(connection.engine.url.database)
    held = _write_locks_held()
    if database in held:
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        held.add(database)
        connection.info["xloud_write_lock"] = database
    connection.info["in_transaction"] = True


def _release(info: dict) -> None:
    database = info.pop("xloud_write_lock", None)
    if database is not None:
        _write_locks_held().discard(database)


def _end(connection: Connection) -> None:
    _release(connection.info)


def _reset(dbapi_connection: object, record: ConnectionPoolEntry,
           reset_state: object) -> None:
    # A connection returned to the pool mid-transaction is rolled back by
    # the pool itself, without a "rollback" event on the Connection.
    _release(record.info)


def serialize_sqlite_writers() -> None:
    """Install the listeners on every engine this process will create."""
    global _installed
    if not _installed:
        event.listen(Engine, "begin", _begin)
        event.listen(Engine, "commit", _end)
        event.listen(Engine, "rollback", _end)
        event.listen(Pool, "reset", _reset)
        _installed = True
