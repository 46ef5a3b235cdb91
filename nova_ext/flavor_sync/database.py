"""Access to the nova_api and cell tables the tool reads and writes.

The tool talks to the database with SQLAlchemy Core rather than through
Nova's objects: building a ``RequestSpec`` object per row costs about 30 s
per 100,000 rows, and nothing but the serialized flavor needs to change.
Reads page through ``request_specs`` by primary key (keyset pagination), so
memory stays flat whatever the table size and no cursor or transaction stays
open between pages. Writes go in short transactions that lock the rows they
rewrite first (``SELECT ... FOR UPDATE`` on MySQL, ``BEGIN IMMEDIATE`` on
SQLite) so a concurrent Nova update is seen, never overwritten.

The key migration also reads the cell databases listed in
``nova_api.cell_mappings``, for the flavors embedded in their
``instance_extra`` rows.
"""

import configparser
import contextlib
import datetime
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import sqlalchemy as sa

from nova_ext.flavor_sync.spec import Flavor

DEFAULT_CONFIG_FILE = '/etc/nova/nova.conf'

_metadata = sa.MetaData()
request_specs = sa.Table(
    'request_specs', _metadata,
    sa.Column('id', sa.Integer, primary_key=True),
    sa.Column('instance_uuid', sa.String(36)),
    sa.Column('spec', sa.Text),
    sa.Column('updated_at', sa.DateTime),
)
instance_mappings = sa.Table(
    'instance_mappings', _metadata,
    sa.Column('id', sa.Integer, primary_key=True),
    sa.Column('instance_uuid', sa.String(36)),
)
flavors = sa.Table(
    'flavors', _metadata,
    sa.Column('id', sa.Integer, primary_key=True),
    sa.Column('flavorid', sa.String(255)),
    sa.Column('name', sa.String(255)),
    sa.Column('vcpus', sa.Integer),
    sa.Column('memory_mb', sa.Integer),
    sa.Column('root_gb', sa.Integer),
    sa.Column('ephemeral_gb', sa.Integer),
    sa.Column('swap', sa.Integer),
)
flavor_extra_specs = sa.Table(
    'flavor_extra_specs', _metadata,
    sa.Column('id', sa.Integer, primary_key=True),
    sa.Column('flavor_id', sa.Integer),
    sa.Column('key', sa.String(255)),
    sa.Column('value', sa.String(255)),
    sa.Column('created_at', sa.DateTime),
    sa.Column('updated_at', sa.DateTime),
)
cell_mappings = sa.Table(
    'cell_mappings', _metadata,
    sa.Column('id', sa.Integer, primary_key=True),
    sa.Column('uuid', sa.String(36)),
    sa.Column('name', sa.String(255)),
    sa.Column('database_connection', sa.Text),
)
# In each cell database.
instance_extra = sa.Table(
    'instance_extra', sa.MetaData(),
    sa.Column('id', sa.Integer, primary_key=True),
    sa.Column('instance_uuid', sa.String(36)),
    sa.Column('flavor', sa.Text),
    sa.Column('updated_at', sa.DateTime),
)


class ConfigError(Exception):
    """No usable database connection could be determined."""


class SpecRow(NamedTuple):
    instance_uuid: str
    spec: str


class InstanceFlavorRow(NamedTuple):
    instance_uuid: str
    flavor: str | None


class CellMapping(NamedTuple):
    uuid: str
    name: str | None
    # As stored: possibly a template Nova fills in from [database].
    database_connection: str


class ExtraSpecKeyRow(NamedTuple):
    """A flavor's extra spec row, with the flavor it belongs to."""

    id: int
    flavor_id: int
    flavorid: str
    name: str | None
    key: str
    value: str
    # As the database stores them (text), so they can be put back exactly.
    created_at: str | None
    updated_at: str | None


def connection_from_config(path: str, section: str = 'api_database') -> str:
    """``[api_database] connection`` (or another section's) of nova.conf."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        with open(path, encoding='utf-8') as config:
            parser.read_file(config)
    except OSError as exc:
        raise ConfigError(f'cannot read {path}: {exc.strerror}') from None
    except configparser.Error as exc:
        raise ConfigError(f'cannot parse {path}: {exc}') from None
    connection = parser.get(section, 'connection', fallback='')
    if not connection.strip():
        raise ConfigError(f'{path} has no [{section}] connection')
    return connection.strip()


def create_engine(url: str) -> sa.engine.Engine:
    """An engine whose transactions lock before they read what they write."""
    try:
        engine = sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ConfigError(f'invalid database connection: {exc}') from None
    if engine.dialect.name == 'sqlite':
        # pysqlite starts transactions lazily, at the first write. Take the
        # write lock at BEGIN for connections that will write, so rows read
        # in a batch cannot change before the batch's updates.
        @sa.event.listens_for(engine, 'connect')
        def _driver_autocommit(dbapi_connection, record):
            dbapi_connection.isolation_level = None
            # Keep a batch's changed pages in memory until its commit:
            # spilling them mid-transaction costs an extra journal sync
            # each time the 2 MiB default cache fills up.
            dbapi_connection.execute('PRAGMA cache_spill = OFF')

        @sa.event.listens_for(engine, 'begin')
        def _begin(connection):
            if connection.get_execution_options().get('for_write'):
                connection.exec_driver_sql('BEGIN IMMEDIATE')
            else:
                connection.exec_driver_sql('BEGIN')
    return engine


def describe(engine: sa.engine.Engine) -> str:
    """Where the engine points, without its password."""
    url = engine.url
    if url.get_backend_name() == 'sqlite':
        return f'sqlite {url.database}'
    return f'{url.database}@{url.host}'


def load_flavors(connection: sa.engine.Connection) -> dict[str, Flavor]:
    """Every flavor with its extra specs, keyed by flavorid."""
    extra_specs: dict[int, dict[str, str]] = {}
    query = sa.select(flavor_extra_specs.c.flavor_id,
                      flavor_extra_specs.c.key,
                      flavor_extra_specs.c.value
                      ).order_by(flavor_extra_specs.c.id)
    for flavor_id, key, value in connection.execute(query):
        extra_specs.setdefault(flavor_id, {})[key] = value
    return {
        row.flavorid: Flavor(
            id=row.id, flavorid=row.flavorid, name=row.name,
            vcpus=row.vcpus, memory_mb=row.memory_mb, root_gb=row.root_gb,
            ephemeral_gb=row.ephemeral_gb, swap=row.swap,
            extra_specs=extra_specs.get(row.id, {}))
        for row in connection.execute(sa.select(flavors))
    }


def count_flavors(connection: sa.engine.Connection) -> int:
    return connection.execute(
        sa.select(sa.func.count()).select_from(flavors)).scalar_one()


def _as_stored(column: sa.Column) -> sa.ColumnElement:
    """A timestamp column read as the text the database holds."""
    return sa.cast(column, sa.String(32)).label(column.name)


def extra_spec_rows(connection: sa.engine.Connection,
                    keys: Iterable[str]) -> list[ExtraSpecKeyRow]:
    """Every flavor's extra spec rows with one of ``keys``, by flavor."""
    query = sa.select(
        flavor_extra_specs.c.id, flavor_extra_specs.c.flavor_id,
        flavors.c.flavorid, flavors.c.name, flavor_extra_specs.c.key,
        flavor_extra_specs.c.value,
        _as_stored(flavor_extra_specs.c.created_at),
        _as_stored(flavor_extra_specs.c.updated_at),
    ).join(flavors, flavors.c.id == flavor_extra_specs.c.flavor_id).where(
        flavor_extra_specs.c.key.in_(list(keys))).order_by(
        flavor_extra_specs.c.flavor_id, flavor_extra_specs.c.id)
    return [ExtraSpecKeyRow(*row) for row in connection.execute(query)]


def current_key_rows(connection: sa.engine.Connection,
                     flavor_ids: Iterable[int], keys: Iterable[str],
                     lock: bool = True) -> dict[int, set[tuple[int, str,
                                                              str]]]:
    """(id, key, value) of these flavors' rows with one of ``keys``.

    Flavors that no longer exist are left out. With ``lock`` (in a write
    transaction) the rows stay locked until the transaction ends; on MySQL
    the locking read of the (flavor_id, key) unique index also keeps the
    keys a flavor lacks from being added meanwhile (gap locks, under the
    default REPEATABLE READ).
    """
    flavor_ids = list(flavor_ids)
    existing = connection.execute(
        sa.select(flavors.c.id).where(flavors.c.id.in_(flavor_ids))
    ).scalars().all()
    result: dict[int, set[tuple[int, str, str]]] = {
        flavor_id: set() for flavor_id in existing}
    query = sa.select(
        flavor_extra_specs.c.flavor_id, flavor_extra_specs.c.id,
        flavor_extra_specs.c.key, flavor_extra_specs.c.value,
    ).where(flavor_extra_specs.c.flavor_id.in_(flavor_ids),
            flavor_extra_specs.c.key.in_(list(keys)))
    if lock and connection.dialect.name != 'sqlite':
        query = query.with_for_update()
    for flavor_id, row_id, key, value in connection.execute(query):
        result.setdefault(flavor_id, set()).add((row_id, key, value))
    return result


def _utcnow() -> datetime.datetime:
    """Now, as Nova stores its timestamps (UTC, naive)."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


_rename_extra_spec = flavor_extra_specs.update().where(
    flavor_extra_specs.c.id == sa.bindparam('row_id')).values(
        key=sa.bindparam('new_key'), updated_at=sa.bindparam('now'))
_delete_extra_spec = flavor_extra_specs.delete().where(
    flavor_extra_specs.c.id == sa.bindparam('row_id'))
# Restores bind the timestamps as the text they were read as.
_put_back_extra_spec = flavor_extra_specs.update().where(
    flavor_extra_specs.c.id == sa.bindparam('row_id')).values(
        key=sa.bindparam('old_key'),
        updated_at=sa.bindparam('old_updated_at', type_=sa.String))
_insert_extra_spec = flavor_extra_specs.insert().values(
    id=sa.bindparam('row_id'), flavor_id=sa.bindparam('row_flavor_id'),
    key=sa.bindparam('old_key'), value=sa.bindparam('old_value'),
    created_at=sa.bindparam('old_created_at', type_=sa.String),
    updated_at=sa.bindparam('old_updated_at', type_=sa.String))


def rename_extra_specs(connection: sa.engine.Connection,
                       renames: Sequence[tuple[int, str | None]]) -> None:
    """Give rows a new key, as a Nova update of them would; None deletes."""
    now = _utcnow()
    renamed = [{'row_id': row_id, 'new_key': key, 'now': now}
               for row_id, key in renames if key is not None]
    deleted = [{'row_id': row_id} for row_id, key in renames if key is None]
    if deleted:
        connection.execute(_delete_extra_spec, deleted)
    if renamed:
        connection.execute(_rename_extra_spec, renamed)


def put_back_extra_specs(connection: sa.engine.Connection, flavor_id: int,
                         renamed: Sequence, deleted: Sequence) -> None:
    """Rows as they were: ``renamed`` get their key and updated_at back,
    ``deleted`` are inserted again with their id and timestamps."""
    if renamed:
        connection.execute(_put_back_extra_spec, [
            {'row_id': row.id, 'old_key': row.key,
             'old_updated_at': row.updated_at} for row in renamed])
    if deleted:
        connection.execute(_insert_extra_spec, [
            {'row_id': row.id, 'row_flavor_id': flavor_id,
             'old_key': row.key, 'old_value': row.value,
             'old_created_at': row.created_at,
             'old_updated_at': row.updated_at} for row in deleted])


def load_cell_mappings(
        connection: sa.engine.Connection) -> list[CellMapping]:
    query = sa.select(cell_mappings.c.uuid, cell_mappings.c.name,
                      cell_mappings.c.database_connection).order_by(
        cell_mappings.c.id)
    return [CellMapping(*row) for row in connection.execute(query)]


def count_instance_flavors(connection: sa.engine.Connection) -> int:
    return connection.execute(
        sa.select(sa.func.count()).select_from(instance_extra)).scalar_one()


def iter_instance_flavor_pages(
        connection: sa.engine.Connection,
        page_size: int = 500) -> Iterator[list[sa.Row]]:
    """Every ``instance_extra`` row as (id, instance_uuid, flavor), paged
    like ``iter_spec_pages``; deleted instances not yet archived too."""
    query = sa.select(
        instance_extra.c.id, instance_extra.c.instance_uuid,
        instance_extra.c.flavor,
    ).order_by(instance_extra.c.id).limit(page_size)
    return _pages(connection, query, instance_extra.c.id)


_instance_extra_ids = sa.bindparam('instance_extra_ids', expanding=True)
_current_instance_flavors = sa.select(
    instance_extra.c.id, instance_extra.c.instance_uuid,
    instance_extra.c.flavor,
).where(instance_extra.c.id.in_(_instance_extra_ids))


def current_instance_flavors(connection: sa.engine.Connection,
                             row_ids: Iterable[int],
                             lock: bool = True
                             ) -> dict[int, InstanceFlavorRow]:
    """Current ``instance_extra`` rows with these ids, as current_specs."""
    row_ids = list(row_ids)
    if not row_ids:
        return {}
    query = _current_instance_flavors
    if lock and connection.dialect.name != 'sqlite':
        query = query.with_for_update()
    rows = connection.execute(query, {'instance_extra_ids': row_ids}).all()
    return {row[0]: InstanceFlavorRow(row[1], row[2]) for row in rows}


_update_instance_flavor = instance_extra.update().where(
    instance_extra.c.id == sa.bindparam('row_id')).values(
        flavor=sa.bindparam('new_flavor'), updated_at=sa.bindparam('now'))


def write_instance_flavors(connection: sa.engine.Connection,
                           flavor_texts: Sequence[tuple[int, str]]) -> None:
    """Store (id, flavor) pairs as Nova's ``Instance.save()`` would."""
    if not flavor_texts:
        return
    now = _utcnow()
    connection.execute(_update_instance_flavor, [
        {'row_id': row_id, 'new_flavor': text, 'now': now}
        for row_id, text in flavor_texts])


def _spec_filter(instance_uuids: Sequence[str] | None):
    if instance_uuids:
        return request_specs.c.instance_uuid.in_(instance_uuids)
    return sa.true()


def count_specs(connection: sa.engine.Connection,
                instance_uuids: Sequence[str] | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(request_specs).where(
        _spec_filter(instance_uuids))
    return connection.execute(query).scalar_one()


def iter_spec_pages(connection: sa.engine.Connection,
                    instance_uuids: Sequence[str] | None = None,
                    page_size: int = 500) -> Iterator[list[sa.Row]]:
    """Every RequestSpec as (id, instance_uuid, spec), in pages by id.

    One page is in memory at a time, and each page is read in its own
    short transaction, ended before the page is handed out.
    """
    query = sa.select(
        request_specs.c.id, request_specs.c.instance_uuid,
        request_specs.c.spec,
    ).where(_spec_filter(instance_uuids)).order_by(
        request_specs.c.id).limit(page_size)
    return _pages(connection, query, request_specs.c.id)


def _pages(connection: sa.engine.Connection, query: sa.Select,
           key: sa.Column) -> Iterator[list[sa.Row]]:
    """The rows of ``query`` (ordered by ``key``, limited to a page),
    one page after the other, each read in its own transaction."""
    last_id = 0
    while True:
        page = connection.execute(query.where(key > last_id)).all()
        connection.rollback()
        if not page:
            return
        last_id = page[-1][0]
        yield page


# The instance UUIDs are bound as one expanding parameter: SQLAlchemy
# then neither coerces each value nor builds a statement per call.
_instance_uuids = sa.bindparam('instance_uuids', expanding=True)
_mapped_instances = sa.select(instance_mappings.c.instance_uuid).where(
    instance_mappings.c.instance_uuid.in_(_instance_uuids))
_spec_ids = sa.bindparam('spec_ids', expanding=True)
_current_specs = sa.select(
    request_specs.c.id, request_specs.c.instance_uuid, request_specs.c.spec,
).where(request_specs.c.id.in_(_spec_ids))


def mapped_instances(connection: sa.engine.Connection,
                     instance_uuids: Sequence[str]) -> set[str]:
    """Those of the instances that still have an instance mapping.

    Nova removes an instance's mapping and RequestSpec when it archives
    the deleted instance; a RequestSpec without a mapping is a leftover.
    """
    if not instance_uuids:
        return set()
    return set(connection.execute(
        _mapped_instances, {'instance_uuids': list(instance_uuids)},
    ).scalars().all())


def current_specs(connection: sa.engine.Connection,
                  spec_ids: Iterable[int],
                  lock: bool = True) -> dict[int, SpecRow]:
    """Current rows with these ids, by id.

    With ``lock`` (in a write transaction) the rows stay locked until the
    transaction ends.
    """
    spec_ids = list(spec_ids)
    if not spec_ids:
        return {}
    query = _current_specs
    if lock and connection.dialect.name != 'sqlite':
        query = query.with_for_update()
    rows = connection.execute(query, {'spec_ids': spec_ids}).all()
    return {row[0]: SpecRow(row[1], row[2]) for row in rows}


@contextlib.contextmanager
def write_transaction(
        engine: sa.engine.Engine) -> Iterator[sa.engine.Connection]:
    """A transaction that commits on success and rolls back on error."""
    with engine.connect() as connection:
        connection.execution_options(for_write=True)
        with connection.begin():
            yield connection


_update_spec = request_specs.update().where(
    request_specs.c.id == sa.bindparam('spec_id')).values(
        spec=sa.bindparam('new_spec'), updated_at=sa.bindparam('now'))


def write_specs(connection: sa.engine.Connection,
                specs: Sequence[tuple[int, str]]) -> None:
    """Store (id, spec) pairs as Nova's ``RequestSpec.save()`` would."""
    if not specs:
        return
    now = _utcnow()
    connection.execute(_update_spec, [
        {'spec_id': spec_id, 'new_spec': spec, 'now': now}
        for spec_id, spec in specs])
