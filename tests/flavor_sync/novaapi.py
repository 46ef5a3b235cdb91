"""A real nova_api database, and cell databases, for the flavor sync tests.

The schemas come from Nova's own migrations (``nova.db.migration.db_sync``)
and every flavor, RequestSpec, cell and instance mapping is written through
Nova's objects, bound to the database under test by swapping the engine
facade of ``nova.db.api.api`` the way Nova's own ``Database`` fixture does.
Instances are written into a cell database by Nova's ``Instance`` object
through a context whose ``db_connection`` is that cell's, which is what
``nova.context.target_cell`` gives. MariaDB is looked for at
``XLOUD_TEST_MYSQL`` (default ``root@127.0.0.1:3306``); each run uses
databases of its own.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid

import oslo_messaging
import sqlalchemy as sa
from nova import conf as nova_conf
from nova import context as nova_context
from nova import objects, rpc
from nova.db import migration
from nova.db.api import api as api_db_api
from nova.db.main import api as main_db_api
from oslo_db.sqlalchemy import enginefacade
from oslo_db.sqlalchemy import test_fixtures as db_fixtures

MYSQL_SERVER = os.environ.get('XLOUD_TEST_MYSQL', 'root@127.0.0.1:3306')

_notifier_ready = False


def prepare_nova() -> None:
    """Register Nova's objects and a no-op notifier (flavor CRUD notifies)."""
    global _notifier_ready
    if _notifier_ready:
        return
    objects.register_all()
    transport = oslo_messaging.get_notification_transport(
        nova_conf.CONF, url='fake://')
    rpc.NOTIFIER = rpc.LEGACY_NOTIFIER = oslo_messaging.Notifier(
        transport, driver='noop')
    _notifier_ready = True


def bind_nova(url: str) -> db_fixtures.ReplaceEngineFacadeFixture:
    """Point Nova's API-database objects at ``url``; cleanUp() undoes it."""
    facade = enginefacade.transaction_context()
    # Test databases need no durability; fsync per commit is most of the
    # time a SQLite test spends on a busy disk.
    facade.configure(connection=url, sqlite_synchronous=False)
    fixture = db_fixtures.ReplaceEngineFacadeFixture(
        api_db_api.context_manager, facade)
    fixture.setUp()
    return fixture


def migrate(url: str) -> None:
    fixture = bind_nova(url)
    try:
        migration.db_sync(database='api')
    finally:
        api_db_api.get_engine().dispose()
        fixture.cleanUp()


def _cell_facade(url: str) -> enginefacade._TransactionContextManager:
    facade = enginefacade.transaction_context()
    facade.configure(connection=url, sqlite_synchronous=False)
    return facade


def migrate_cell(url: str) -> None:
    """Nova's main (cell) schema, from its migrations."""
    facade = _cell_facade(url)
    fixture = db_fixtures.ReplaceEngineFacadeFixture(
        main_db_api.context_manager, facade)
    fixture.setUp()
    try:
        migration.db_sync(database='main')
    finally:
        facade.writer.get_engine().dispose()
        fixture.cleanUp()


def _create_mysql_database(prefix: str) -> str:
    name = f'{prefix}_{uuid.uuid4().hex[:12]}'
    server = sa.create_engine(f'mysql+pymysql://{MYSQL_SERVER}/')
    with server.begin() as connection:
        connection.exec_driver_sql(
            f'CREATE DATABASE {name} CHARACTER SET utf8mb4')
    server.dispose()
    return name


def _drop_mysql_databases(names) -> None:
    server = sa.create_engine(f'mysql+pymysql://{MYSQL_SERVER}/')
    with server.begin() as connection:
        for name in names:
            connection.exec_driver_sql(f'DROP DATABASE {name}')
    server.dispose()


def mysql_available() -> str | None:
    """The reason MariaDB cannot be used, or None when it can."""
    engine = sa.create_engine(f'mysql+pymysql://{MYSQL_SERVER}/')
    try:
        with engine.connect():
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means "absent"
        reason = getattr(exc, 'orig', None) or exc
        return f'no MariaDB/MySQL server at {MYSQL_SERVER}: {reason}'
    finally:
        engine.dispose()


class SqliteTemplate:
    """A migrated database file, copied for each test."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, 'nova_api_template.db')
        migrate(f'sqlite:///{self.path}')

    def new_database(self, directory: str) -> str:
        path = os.path.join(directory, 'nova_api.db')
        shutil.copyfile(self.path, path)
        return f'sqlite:///{path}'


class MysqlDatabase:
    """A migrated scratch database on the MariaDB server, emptied per test."""

    TABLES = ('request_specs', 'instance_mappings', 'flavor_projects',
              'flavor_extra_specs', 'flavors', 'cell_mappings')

    def __init__(self) -> None:
        self.name = _create_mysql_database('xloud_flavor_sync')
        self.url = (f'mysql+pymysql://{MYSQL_SERVER}/{self.name}'
                    '?charset=utf8mb4')
        migrate(self.url)

    def new_database(self, directory: str) -> str:
        engine = sa.create_engine(self.url)
        with engine.begin() as connection:
            for table in self.TABLES:
                connection.exec_driver_sql(f'DELETE FROM {table}')
        engine.dispose()
        return self.url

    def drop(self) -> None:
        _drop_mysql_databases([self.name])


class SqliteCellTemplate:
    """A cell database file with Nova's main schema, copied per cell."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, 'cell_template.db')
        migrate_cell(f'sqlite:///{self.path}')

    def new_databases(self, directory: str, names) -> list[str]:
        urls = []
        for name in names:
            path = os.path.join(directory, f'nova_{name}.db')
            shutil.copyfile(self.path, path)
            urls.append(f'sqlite:///{path}')
        return urls


class MysqlCellDatabases:
    """Migrated cell databases on the MariaDB server, emptied per test."""

    # What Instance.create() writes, children first.
    TABLES = ('instance_extra', 'instance_info_caches',
              'instance_system_metadata', 'instance_metadata', 'instances')

    def __init__(self, count: int) -> None:
        self.names = [_create_mysql_database(f'xloud_flavor_sync_cell{n}')
                      for n in range(count)]
        self.urls = [f'mysql+pymysql://{MYSQL_SERVER}/{name}?charset=utf8mb4'
                     for name in self.names]
        for url in self.urls:
            migrate_cell(url)

    def new_databases(self, directory: str, names) -> list[str]:
        urls = self.urls[:len(names)]
        for url in urls:
            engine = sa.create_engine(url)
            with engine.begin() as connection:
                for table in self.TABLES:
                    connection.exec_driver_sql(f'DELETE FROM {table}')
            engine.dispose()
        return urls

    def drop(self) -> None:
        _drop_mysql_databases(self.names)


class NovaCell:
    """A cell: its mapping in nova_api, and a context bound to its database
    the way ``nova.context.target_cell`` binds one."""

    def __init__(self, api: NovaApi, name: str, url: str,
                 cell_uuid: str | None = None,
                 database_connection: str | None = None) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        self._context: nova_context.RequestContext | None = None
        self.mapping = objects.CellMapping(
            api.context, uuid=cell_uuid or str(uuid.uuid4()), name=name,
            transport_url='fake://',
            database_connection=database_connection or url)
        self.mapping.create()

    @property
    def context(self) -> nova_context.RequestContext:
        # Made on first use: starting Nova's engine facade connects, and
        # some tests map a cell whose database does not exist.
        if self._context is None:
            self._context = nova_context.RequestContext(
                'user-1', 'project-1', is_admin=True)
            self._context.db_connection = _cell_facade(self.url)
            self._context.cell_uuid = self.mapping.uuid
        return self._context

    @property
    def is_cell0(self) -> bool:
        return self.mapping.uuid == objects.CellMapping.CELL0_UUID

    def close(self) -> None:
        self.engine.dispose()
        if self._context is not None:
            self._context.db_connection.writer.get_engine().dispose()

    def create_instance(self, instance_uuid: str,
                        flavor: objects.Flavor) -> objects.Instance:
        """What the conductor writes: a built instance, or in cell0 one
        whose build failed (no host)."""
        placed = {} if self.is_cell0 else {
            'host': 'compute1', 'node': 'node1', 'compute_id': 1}
        instance = objects.Instance(
            context=self.context, uuid=instance_uuid,
            project_id='project-1', user_id='user-1', flavor=flavor,
            old_flavor=None, new_flavor=None, instance_type_id=flavor.id,
            vcpus=flavor.vcpus, memory_mb=flavor.memory_mb,
            root_gb=flavor.root_gb, ephemeral_gb=flavor.ephemeral_gb,
            vm_state='error' if self.is_cell0 else 'active',
            power_state=0 if self.is_cell0 else 1, system_metadata={},
            **placed)
        instance.create()
        return instance

    def load(self, instance_uuid: str) -> objects.Instance:
        """The instance with its flavors, loaded as the compute API does."""
        return objects.Instance.get_by_uuid(
            self.context, instance_uuid,
            expected_attrs=['flavor', 'old_flavor', 'new_flavor'])

    def flavors(self) -> dict[str, str]:
        """instance_uuid -> instance_extra.flavor, exactly as stored."""
        with self.engine.connect() as connection:
            return dict(connection.exec_driver_sql(
                'SELECT instance_uuid, flavor FROM instance_extra').all())

    def set_raw_flavor(self, instance_uuid: str, text: str | None) -> None:
        """A flavor column no Nova code would write, for the odd cases."""
        with self.engine.begin() as connection:
            connection.execute(sa.text(
                'UPDATE instance_extra SET flavor = :text '
                'WHERE instance_uuid = :uuid'),
                {'text': text, 'uuid': instance_uuid})

    def delete_instance(self, instance_uuid: str) -> None:
        """What ``nova-manage db archive_deleted_rows`` takes out of the
        cell's instance_extra table (it moves the row to its shadow)."""
        with self.engine.begin() as connection:
            connection.execute(sa.text(
                'DELETE FROM instance_extra WHERE instance_uuid = :uuid'),
                {'uuid': instance_uuid})


class NovaApi:
    """Flavors, instances' RequestSpecs and mappings, made by Nova's code."""

    def __init__(self, url: str, backend: str) -> None:
        prepare_nova()
        self.url = url
        self.backend = backend
        self._fixture = bind_nova(url)
        self.engine = sa.create_engine(url)
        self.cells: list[NovaCell] = []
        self.context = nova_context.RequestContext(
            'user-1', 'project-1', is_admin=True)

    def close(self) -> None:
        for cell in self.cells:
            cell.close()
        self.engine.dispose()
        api_db_api.get_engine().dispose()
        self._fixture.cleanUp()

    def add_cell(self, name: str, url: str, cell_uuid: str | None = None,
                 database_connection: str | None = None) -> NovaCell:
        """A cell mapped in nova_api (``database_connection`` when it is
        to hold something other than ``url``, such as a template)."""
        cell = NovaCell(self, name, url, cell_uuid, database_connection)
        self.cells.append(cell)
        return cell

    def create_flavor(self, flavorid: str, vcpus: int = 2,
                      memory_mb: int = 2048, root_gb: int = 20,
                      extra_specs: dict[str, str] | None = None,
                      name: str | None = None) -> objects.Flavor:
        flavor = objects.Flavor(
            context=self.context, flavorid=flavorid,
            name=name or f'flavor-{flavorid}', vcpus=vcpus,
            memory_mb=memory_mb, root_gb=root_gb, ephemeral_gb=0, swap=0,
            rxtx_factor=1.0, is_public=True, disabled=False,
            extra_specs=extra_specs or {})
        flavor.create()
        return flavor

    def set_extra_specs(self, flavorid: str, **changes: str | None) -> None:
        """What ``openstack flavor set/unset --property`` does."""
        flavor = objects.Flavor.get_by_flavor_id(self.context, flavorid)
        for key, value in changes.items():
            key = key.replace('__', ':')
            if value is None:
                del flavor.extra_specs[key]
            else:
                flavor.extra_specs[key] = value
        flavor.save()

    def flavor_id(self, flavorid: str) -> int:
        """The flavor's internal id (flavor_extra_specs.flavor_id)."""
        return objects.Flavor.get_by_flavor_id(self.context, flavorid).id

    def delete_flavor(self, flavorid: str) -> None:
        objects.Flavor.get_by_flavor_id(self.context, flavorid).destroy()

    def boot(self, flavorid: str, mapped: bool = True,
             cell: NovaCell | None = None) -> str:
        """The records the API writes for a new server, as the API does,
        and, given a cell, the instance the conductor creates in it."""
        instance_uuid = str(uuid.uuid4())
        flavor = objects.Flavor.get_by_flavor_id(self.context, flavorid)
        image = objects.ImageMeta.from_dict({
            'id': str(uuid.uuid4()), 'name': 'cirros', 'size': 1,
            'disk_format': 'qcow2', 'container_format': 'bare',
            'min_ram': 0, 'min_disk': 0,
            'properties': {'hw_disk_bus': 'virtio'}})
        spec = objects.RequestSpec.from_components(
            self.context, instance_uuid, image, flavor, None,
            objects.InstancePCIRequests(requests=[]), {}, None, 'nova',
            security_groups=objects.SecurityGroupList(objects=[]))
        spec.is_bfv = False
        spec.num_instances = 1
        spec.create()
        if mapped:
            objects.InstanceMapping(
                self.context, instance_uuid=instance_uuid,
                project_id=self.context.project_id,
                user_id=self.context.user_id,
                cell_mapping=cell and cell.mapping).create()
        if cell is not None:
            cell.create_instance(instance_uuid, flavor)
        return instance_uuid

    def resize_unconfirmed(self, cell: NovaCell, instance_uuid: str,
                           flavorid: str) -> None:
        """A resize finished but not yet confirmed, as Nova records it:
        the RequestSpec asks for the new flavor, the instance runs with it
        and keeps the old one for a revert."""
        self.resize(instance_uuid, flavorid)
        instance = cell.load(instance_uuid)
        new_flavor = objects.Flavor.get_by_flavor_id(self.context, flavorid)
        instance.old_flavor = instance.flavor
        instance.new_flavor = new_flavor
        instance.flavor = new_flavor
        instance.save()

    def extra_spec_rows(self) -> list[tuple]:
        """Every flavor_extra_specs row, every column as stored."""
        with self.engine.connect() as connection:
            return [tuple(row) for row in connection.exec_driver_sql(
                'SELECT id, flavor_id, `key`, value, created_at, updated_at '
                'FROM flavor_extra_specs ORDER BY id').all()]

    def resize(self, instance_uuid: str, flavorid: str) -> None:
        """What the conductor records in the RequestSpec on a resize."""
        spec = self.load(instance_uuid)
        spec.flavor = objects.Flavor.get_by_flavor_id(self.context, flavorid)
        spec.save()

    def archive(self, instance_uuid: str) -> None:
        """What ``nova-manage db archive_deleted_rows`` removes."""
        objects.RequestSpec.get_by_instance_uuid(
            self.context, instance_uuid).destroy()
        objects.InstanceMapping.get_by_instance_uuid(
            self.context, instance_uuid).destroy()

    def unmap(self, instance_uuid: str) -> None:
        objects.InstanceMapping.get_by_instance_uuid(
            self.context, instance_uuid).destroy()

    def load(self, instance_uuid: str) -> objects.RequestSpec:
        return objects.RequestSpec.get_by_instance_uuid(
            self.context, instance_uuid)

    def specs(self) -> dict[str, str]:
        """instance_uuid -> the spec column, exactly as stored."""
        with self.engine.connect() as connection:
            return dict(connection.exec_driver_sql(
                'SELECT instance_uuid, spec FROM request_specs').all())

    def checksums(self) -> dict[str, str]:
        return {uuid_: hashlib.sha256(spec.encode()).hexdigest()
                for uuid_, spec in self.specs().items()}

    def insert_raw_spec(self, spec: str, mapped: bool = True) -> str:
        """A row no Nova code would write, for the malformed-row cases."""
        instance_uuid = str(uuid.uuid4())
        with self.engine.begin() as connection:
            connection.execute(sa.text(
                'INSERT INTO request_specs (instance_uuid, spec, created_at) '
                'VALUES (:uuid, :spec, CURRENT_TIMESTAMP)'),
                {'uuid': instance_uuid, 'spec': spec})
        if mapped:
            objects.InstanceMapping(
                self.context, instance_uuid=instance_uuid,
                project_id='project-1', user_id='user-1',
                cell_mapping=None).create()
        return instance_uuid
