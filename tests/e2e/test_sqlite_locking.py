"""The local cloud's SQLite locking, on oslo.db's enginefacade as the
services use it, without starting a cloud."""

import sqlite3
import threading

import pytest
from oslo_db.sqlalchemy import enginefacade
from sqlalchemy import text

from deploy.localcloud import sqlite_locking

BUSY_TIMEOUT = 2


@enginefacade.transaction_context_provider
class _Context:
    pass


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "service.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE counter (value INTEGER NOT NULL)")
        conn.execute("INSERT INTO counter VALUES (0)")
    sqlite_locking.serialize_sqlite_writers()
    manager = enginefacade.transaction_context()
    manager.configure(connection=f"sqlite:///{path}?timeout={BUSY_TIMEOUT}")
    yield path, manager
    manager.dispose_pool()


def _write_lock_is_free(path) -> bool:
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        probe.close()


def test_independent_reader_inside_a_writer_reads_its_snapshot(database):
    # Placement re-reads a provider this way after a generation conflict;
    # taking the write lock here would wait on the outer transaction.
    path, manager = database
    context = _Context()
    with manager.writer.using(context) as session:
        session.execute(text("UPDATE counter SET value = value + 1"))
        with manager.reader.independent.using(context) as inner:
            seen = inner.execute(text("SELECT value FROM counter")).scalar()
    assert seen == 0
    with manager.reader.using(_Context()) as session:
        assert session.execute(
            text("SELECT value FROM counter")).scalar() == 1


def test_read_then_write_transactions_queue_instead_of_failing(database):
    _, manager = database
    errors: list[Exception] = []

    def increment(times: int) -> None:
        for _ in range(times):
            try:
                with manager.writer.using(_Context()) as session:
                    value = session.execute(
                        text("SELECT value FROM counter")).scalar()
                    session.execute(text("UPDATE counter SET value = :v"),
                                    {"v": value + 1})
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=increment, args=(50,))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with manager.reader.using(_Context()) as session:
        assert session.execute(
            text("SELECT value FROM counter")).scalar() == 200


def test_write_lock_is_taken_again_after_a_failed_transaction(database):
    path, manager = database
    with (pytest.raises(RuntimeError),
          manager.writer.using(_Context()) as session):
        session.execute(text("UPDATE counter SET value = 5"))
        raise RuntimeError("the request failed")
    assert _write_lock_is_free(path)
    with manager.writer.using(_Context()) as session:
        session.execute(text("SELECT value FROM counter"))
        assert not _write_lock_is_free(path)
    assert _write_lock_is_free(path)
