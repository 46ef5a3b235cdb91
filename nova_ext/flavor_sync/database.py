"""Access to the nova_api tables the sync reads and writes.

The tool talks to the database with SQLAlchemy Core rather than through
Nova's objects: building a ``RequestSpec`` object per row costs about 30 s
per 100,000 rows, and nothing but the serialized flavor needs to change.
Reads page through ``request_specs`` by primary key (keyset pagination), so
memory stays flat whatever the table size and no cursor or transaction stays
open between pages. Writes go in short transactions that lock the rows they
rewrite first (``SELECT ... FOR UPDATE`` on MySQL, ``BEGIN IMMEDIATE`` on
SQLite) so a concurrent Nova update is seen, never overwritten.
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
)


class ConfigError(Exception):
    """No usable database connection could be determined."""


class SpecRow(NamedTuple):
    instance_uuid: str
    spec: str


def connection_from_config(path: str) -> str:
    """``[api_database] connection`` of a nova.conf file."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        with open(path, encoding='utf-8') as config:
            parser.read_file(config)
    except OSError as exc:
        raise ConfigError(f'cannot read {path}: {exc.strerror}') from None
    except configparser.Error as exc:
        raise ConfigError(f'cannot parse {path}: {exc}') from None
    connection = parser.get('api_database', 'connection', fallback='')
    if not connection.strip():
        raise ConfigError(f'{path} has no [api_database] connection')
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
    last_id = 0
    while True:
        page = connection.execute(
            query.where(request_specs.c.id > last_id)).all()
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
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    connection.execute(_update_spec, [
        {'spec_id': spec_id, 'new_spec': spec, 'now': now}
        for spec_id, spec in specs])
