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
