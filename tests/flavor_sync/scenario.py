"""A cloud whose flavors changed after its instances booted."""

import dataclasses
import json

from tests.flavor_sync.novaapi import NovaApi

STORAGE_SPECS = {
    'aggregate_instance_extra_specs:storage_type': 'ssd',
    'minimum_cpu': '1',
    'hw:cpu_policy': 'shared',
}


@dataclasses.dataclass
class Scenario:
    storage: list[str]
    sized: list[str]
    plain: list[str]

    @property
    def stale(self) -> list[str]:
        return self.storage + self.sized


def build(api: NovaApi) -> Scenario:
    """Three flavors; two change after their instances booted.

    ``storage`` gets an extra spec changed, one removed and one added (as
    ``openstack flavor set/unset --property`` would); ``sized`` is deleted
    and re-created under the same flavorid with more vCPUs and memory;
    ``plain`` does not change.
    """
    api.create_flavor('storage', extra_specs=dict(STORAGE_SPECS))
    api.create_flavor('sized', vcpus=2, memory_mb=2048,
                      extra_specs={'minimum_cpu': '1'})
    api.create_flavor('plain', vcpus=1, memory_mb=512)
    scenario = Scenario(
        storage=[api.boot('storage') for _ in range(3)],
        sized=[api.boot('sized') for _ in range(2)],
        plain=[api.boot('plain') for _ in range(2)],
    )
    api.set_extra_specs(
        'storage', aggregate_instance_extra_specs__storage_type='ceph',
        minimum_cpu=None, minimum_memory='512')
    api.delete_flavor('sized')
    api.create_flavor('sized', vcpus=4, memory_mb=4096,
                      extra_specs={'minimum_cpu': '2'})
    return scenario


def without_flavor(spec: str) -> dict:
    """A spec with the embedded flavor's data left out, for comparisons."""
    document = json.loads(spec)
    del document['nova_object.data']['flavor']['nova_object.data']
    return document


def embedded_flavor(spec: str) -> dict:
    return json.loads(spec)['nova_object.data']['flavor']['nova_object.data']


# Extra specs of the flavors of a cloud that still has the legacy keys.
LEGACY_SPECS = {
    'hw:cpu_policy': 'shared',
    'minimum_cpu': '1',
    'aggregate_instance_extra_specs:storage_type': 'ssd',
    'minimum_memory': '512',
}
# ... and what the migration makes of them: renamed in place.
MIGRATED_SPECS = {
    'hw:cpu_policy': 'shared',
    'xloud:minimum_cpu': '1',
    'aggregate_instance_extra_specs:storage_type': 'ssd',
    'xloud:minimum_memory': '512',
}
BOTH_SPECS = {'minimum_cpu': '2', 'xloud:minimum_cpu': '2',
              'minimum_memory': '1024'}
BOTH_MIGRATED = {'xloud:minimum_cpu': '2', 'xloud:minimum_memory': '1024'}
BIGGER_SPECS = {'minimum_cpu': '4'}
BIGGER_MIGRATED = {'xloud:minimum_cpu': '4'}
MODERN_SPECS = {'xloud:minimum_cpu': '1', 'hw:mem_page_size': 'small'}


@dataclasses.dataclass
class LegacyCloud:
    cell0: object
    cell1: object
    # Instances in cell1, by the flavor they were booted from.
    legacy: list[str]
    both: list[str]
    modern: list[str]
    plain: list[str]
    # Booted from "legacy", resized to "bigger", not yet confirmed.
    resized: list[str]
    # A build that failed: the instance is in cell0.
    failed: list[str]
    # A RequestSpec left behind by an archived instance (no mapping).
    leftover: list[str]

    @property
    def with_legacy_keys(self) -> list[str]:
        """Instances whose copies hold legacy keys, in cell1 or cell0."""
        return self.legacy + self.both + self.resized + self.failed

    @property
    def in_cell1(self) -> list[str]:
        return (self.legacy + self.both + self.modern + self.plain +
                self.resized)

    @property
    def instances(self) -> list[str]:
        return self.in_cell1 + self.failed


def build_legacy(api: NovaApi, cell0, cell1) -> LegacyCloud:
    """Flavors with the legacy keys, their instances and RequestSpecs.

    ``legacy`` has both legacy keys; ``both`` has minimum_cpu under both
    names with one value, and the legacy minimum_memory; ``bigger`` has
    the legacy minimum_cpu; ``modern`` only the namespaced key and
    ``plain`` no extra specs: those two are left as they are.
    """
    api.create_flavor('legacy', extra_specs=dict(LEGACY_SPECS))
    api.create_flavor('both', extra_specs=dict(BOTH_SPECS))
    # Its minimum was raised once: a row with updated_at set, which a
    # restore must put back as it was.
    api.create_flavor('bigger', vcpus=4, memory_mb=4096,
                      extra_specs={'minimum_cpu': '3'})
    api.set_extra_specs('bigger', **BIGGER_SPECS)
    api.create_flavor('modern', extra_specs=dict(MODERN_SPECS))
    api.create_flavor('plain', vcpus=1, memory_mb=512)
    cloud = LegacyCloud(
        cell0=cell0, cell1=cell1,
        legacy=[api.boot('legacy', cell=cell1) for _ in range(2)],
        both=[api.boot('both', cell=cell1)],
        modern=[api.boot('modern', cell=cell1)],
        plain=[api.boot('plain', cell=cell1)],
        resized=[api.boot('legacy', cell=cell1)],
        failed=[api.boot('legacy', cell=cell0)],
        leftover=[api.boot('legacy', mapped=False)],
    )
    for instance_uuid in cloud.resized:
        api.resize_unconfirmed(cell1, instance_uuid, 'bigger')
    return cloud
