"""The SIZE object of the os-xloud-adjust API (doc/design.md)."""

from nova import objects, utils
from nova.api.openstack import common, wsgi

from nova_ext import compatibility, sizing

SOURCE_LIVE = 'live'
SOURCE_RECORDED = 'recorded'


class ViewBuilder(common.ViewBuilder):
    """Builds the size of an instance from its flavor and record."""

    _collection_name = 'os-xloud-adjust'

    def size(self, instance: objects.Instance, show_host: bool,
             live: dict | None = None,
             size: sizing.ElasticSize | None = None) -> dict:
        """One SIZE; ``live`` is what the compute host reported, if any,
        ``size`` the instance's ElasticSize when the caller has it."""
        if size is None:
            size = sizing.ElasticSize.from_instance(instance)
        flavor = instance.flavor
        if live is None:
            current_vcpus = size.live_vcpus
            current_memory_mb = size.live_memory_mb
        else:
            current_vcpus = live['vcpus']
            current_memory_mb = live['memory_mb']
        return {
            'id': instance.uuid,
            'name': instance.display_name,
            'project_id': instance.project_id,
            'host': instance.host if show_host else None,
            'status': common.status_from_state(instance.vm_state,
                                               instance.task_state),
            'flavor': {
                'id': flavor.flavorid,
                'name': flavor.name,
                'vcpus': flavor.vcpus,
                'memory_mb': flavor.memory_mb,
                'minimum_cpu': size.minimum_vcpus,
                'minimum_memory': size.minimum_memory_mb,
                'memory_model': size.memory_model,
            },
            'current_vcpus': current_vcpus,
            'current_memory_mb': current_memory_mb,
            'max_vcpus': size.max_vcpus,
            'max_memory_mb': size.max_memory_mb,
            'min_vcpus': size.floor_vcpus,
            'min_memory_mb': size.floor_memory_mb,
            'boot_vcpus': size.boot_vcpus,
            'boot_memory_mb': size.boot_memory_mb,
            'source': SOURCE_RECORDED if live is None else SOURCE_LIVE,
            'updated_at': (utils.isotime(size.updated_at)
                           if size.updated_at else None),
            # Why a dimension cannot be adjusted (its flavor, image or
            # devices), or null: nova_ext.compatibility.
            'not_adjustable': {
                'vcpus': size.conflicts.get(compatibility.VCPUS),
                'memory_mb': size.conflicts.get(compatibility.MEMORY),
            },
            'adjustment': {
                # The record keeps '' for "none"; the API says null.
                'status': size.status or None,
                'request_id': size.request_id or None,
                'error': size.error or None,
            },
        }

    def show(self, instance: objects.Instance, show_host: bool,
             live: dict | None = None,
             size: sizing.ElasticSize | None = None) -> dict:
        """One SIZE with its recorded changes, newest first.

        Only here: the bulk list stays one row per instance.
        """
        view = self.size(instance, show_host, live, size)
        view['guest'] = self.guest(instance)
        view['changes'] = [
            {'request_id': change.request_id,
             'changed_at': utils.isotime(change.changed_at),
             'details': change.details}
            for change in sizing.changes(instance)]
        return view

    @staticmethod
    def guest(instance: objects.Instance) -> dict:
        """What the guest itself showed when its compute host last read
        it (the end of its last adjustment); all null when never read
        since its last start."""
        record = sizing.guest_record(instance)
        if record is None:
            return {'agent': None, 'online_vcpus': None,
                    'available_memory_mb': None, 'usable_memory_mb': None,
                    'as_of': None}
        return {
            'agent': record.agent,
            'online_vcpus': record.online_vcpus,
            'available_memory_mb': record.available_memory_mb,
            'usable_memory_mb': record.usable_memory_mb,
            'as_of': utils.isotime(record.as_of),
        }

    def index(self, req: wsgi.Request, sizes: list[dict]) -> dict:
        return {
            'servers': sizes,
            'servers_links': self._get_collection_links(
                req, sizes, self._collection_name, 'id'),
        }
