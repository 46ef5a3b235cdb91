"""A real nova_api database for the flavor sync tests.

The schema comes from Nova's own migrations (``nova.db.migration.db_sync``)
and every flavor, RequestSpec and instance mapping is written through Nova's
objects, bound to the database under test by swapping the engine facade of
``nova.db.api.api`` the way Nova's own ``Database`` fixture does.
MariaDB is looked for at ``XLOUD_TEST_MYSQL`` (default
``root@127.0.0.1:3306``); each run uses a database of its own.
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
              'flavor_extra_specs', 'flavors')

    def __init__(self) -> None:
        self.name = f'xloud_flavor_sync_{uuid.uuid4().hex[:12]}'
        server = sa.create_engine(f'mysql+pymysql://{MYSQL_SERVER}/')
        with server.begin() as connection:
            connection.exec_driver_sql(
                f'CREATE DATABASE {self.name} CHARACTER SET utf8mb4')
        server.dispose()
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
        server = sa.create_engine(f'mysql+pymysql://{MYSQL_SERVER}/')
        with server.begin() as connection:
            connection.exec_driver_sql(f'DROP DATABASE {self.name}')
        server.dispose()


class NovaApi:
    """Flavors, instances' RequestSpecs and mappings, made by Nova's code."""

    def __init__(self, url: str, backend: str) -> None:
        prepare_nova()
        self.url = url
        self.backend = backend
        self._fixture = bind_nova(url)
        self.engine = sa.create_engine(url)
        self.context = nova_context.RequestContext(
            'user-1', 'project-1', is_admin=True)

    def close(self) -> None:
        self.engine.dispose()
        api_db_api.get_engine().dispose()
        self._fixture.cleanUp()

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

    def delete_flavor(self, flavorid: str) -> None:
        objects.Flavor.get_by_flavor_id(self.context, flavorid).destroy()

    def boot(self, flavorid: str, mapped: bool = True) -> str:
        """The records the API writes for a new server, as the API does."""
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
                user_id=self.context.user_id, cell_mapping=None).create()
        return instance_uuid

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
