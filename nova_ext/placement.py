"""Keeps an instance's placement allocation at its current size.

The instance is placement's consumer; only its VCPU and MEMORY_MB on the
resource provider of its compute node change, every other resource and
provider (disk, PCPU, a source host's share during an evacuation) is sent
back as placement returned it. The consumer generation placement returned
is sent with the change, so a concurrent writer (a migration, the
scheduler, another adjustment) is never overwritten: the change is read
and tried again, a bounded number of times.
"""

from __future__ import annotations

import math

from nova import context as nova_context
from nova import exception, objects
from nova.i18n import _
from nova.scheduler.client import report
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

VCPU = 'VCPU'
PCPU = 'PCPU'
MEMORY_MB = 'MEMORY_MB'

# The placement microversion Nova itself writes allocations with.
_ALLOCATION_VERSION = report.CONSUMER_GENERATION_VERSION
_ATTEMPTS = 4


class InsufficientCapacity(exception.NovaException):
    msg_fmt = _('Not enough room on the compute node for instance '
                '%(instance_uuid)s at %(vcpus)d vCPUs and %(memory_mb)d MiB: '
                '%(reason)s')
    code = 409


class PlacementUnreadable(exception.NovaException):
    msg_fmt = _('Placement could not be read for resource provider '
                '%(provider)s: %(reason)s')


class AllocationUpdateFailed(exception.NovaException):
    msg_fmt = _('Could not change the placement allocation of instance '
                '%(instance_uuid)s: %(reason)s')


def set_allocation(context: nova_context.RequestContext,
                   instance: objects.Instance, vcpus: int,
                   memory_mb: int, provider_uuid: str | None = None) -> None:
    """Make the instance's VCPU/MEMORY_MB on its compute node these amounts.

    ``provider_uuid`` names the compute node when the caller knows better
    than ``instance.host``/``node``: during an evacuation Nova moves the
    instance to its new host only after the guest was spawned there.

    Raises InsufficientCapacity when placement refuses a grow for lack of
    room, AllocationUpdateFailed for anything else that leaves the
    allocation unchanged.
    """
    _update(context, instance, provider_uuid,
            lambda current: (vcpus, memory_mb))


def claim_at_least(context: nova_context.RequestContext,
                   instance: objects.Instance, vcpus: int, memory_mb: int,
                   provider_uuid: str | None = None) -> tuple[int, int]:
    """Grow VCPU/MEMORY_MB to at least these amounts, never shrink them.

    What a guest is about to use is claimed this way before it uses it
    (a grow, a domain about to start), so that placement never holds less
    than the guest can use, whatever it held before. Returns the
    allocation (VCPU, MEMORY_MB) as it was before the claim. Raises as
    set_allocation.
    """
    return _update(context, instance, provider_uuid,
                   lambda current: (max(current[0], vcpus),
                                    max(current[1], memory_mb)))


def allocated(context: nova_context.RequestContext,
              instance: objects.Instance,
              provider_uuid: str | None = None) -> tuple[int, int] | None:
    """VCPU and MEMORY_MB the instance holds on its compute node, or None
    when it holds nothing there."""
    client = report.report_client_singleton()
    provider = provider_uuid or _compute_node_provider(context, instance)
    current = client.get_allocs_for_consumer(context, instance.uuid)
    allocation = (current.get('allocations') or {}).get(provider)
    if allocation is None:
        return None
    resources = allocation['resources']
    return _vcpus_held(resources), resources.get(MEMORY_MB, 0)


def capacity(total: int, reserved: int, allocation_ratio: float) -> int:
    """What placement lets be allocated of an inventory: it refuses a
    claim when used + amount exceeds the float (total - reserved) *
    ratio, so whole units fit under its floor."""
    return max(0, math.floor((total - reserved) * allocation_ratio))


def free_room(context: nova_context.RequestContext,
              provider_uuid: str) -> dict[str, int]:
    """What is left to allocate of VCPU and MEMORY_MB on a provider:
    ``{VCPU: n, MEMORY_MB: n}`` (a class it has no inventory of is
    left out). Raises PlacementUnreadable when placement does not
    answer."""
    client = report.report_client_singleton()
    found = {}
    for path in ('inventories', 'usages'):
        resp = client.get(f'/resource_providers/{provider_uuid}/{path}',
                          version='1.0', global_request_id=context.global_id)
        if resp.status_code != 200:
            raise PlacementUnreadable(
                provider=provider_uuid,
                reason=f'GET {path} answered HTTP {resp.status_code}')
        found[path] = resp.json()[
            'inventories' if path == 'inventories' else 'usages']
    room = {}
    for resource_class in (VCPU, MEMORY_MB):
        inventory = found['inventories'].get(resource_class)
        if inventory is None:
            continue
        room[resource_class] = max(0, capacity(
            inventory['total'], inventory.get('reserved', 0),
            float(inventory.get('allocation_ratio', 1.0))) -
            found['usages'].get(resource_class, 0))
    return room


def _vcpus_held(resources: dict) -> int:
    # A pinned guest's vCPUs are PCPU; they are never changed here.
    if VCPU not in resources and PCPU in resources:
        return resources[PCPU]
    return resources.get(VCPU, 0)


def _update(context: nova_context.RequestContext,
            instance: objects.Instance, provider_uuid: str | None,
            new_amounts) -> tuple[int, int]:
    """Change VCPU/MEMORY_MB to ``new_amounts((vcpus, memory_mb))``.

    Read, change and write with the consumer generation, again on a
    concurrent update; returns the amounts before the change.
    """
    client = report.report_client_singleton()
    provider = provider_uuid or _compute_node_provider(context, instance)
    for attempt in range(1, _ATTEMPTS + 1):
        current = client.get_allocs_for_consumer(context, instance.uuid)
        allocations = current.get('allocations') or {}
        if provider not in allocations:
            raise AllocationUpdateFailed(
                instance_uuid=instance.uuid,
                reason=f'no allocation on compute node provider {provider}')
        resources = allocations[provider]['resources']
        before = (_vcpus_held(resources), resources.get(MEMORY_MB, 0))
        vcpus, memory_mb = new_amounts(before)
        pinned = VCPU not in resources and PCPU in resources
        if pinned:
            # Its vCPUs are not elastic (nova_ext.compatibility): PCPU
            # stays as Nova claimed it, and no VCPU is added beside it.
            vcpus = before[0]
        if before == (vcpus, memory_mb):
            return before
        payload = {
            'allocations': {
                rp: {'resources': dict(alloc['resources'])}
                for rp, alloc in allocations.items()},
            'consumer_generation': current['consumer_generation'],
            'project_id': current.get('project_id', instance.project_id),
            'user_id': current.get('user_id', instance.user_id),
        }
        changed = payload['allocations'][provider]['resources']
        if not pinned:
            changed[VCPU] = vcpus
        changed[MEMORY_MB] = memory_mb
        resp = client.put(f'/allocations/{instance.uuid}', payload,
                          version=_ALLOCATION_VERSION,
                          global_request_id=context.global_id)
        if resp.status_code == 204:
            LOG.info('Placement allocation set to %(vcpus)d VCPU, '
                     '%(mem)d MEMORY_MB on %(rp)s',
                     {'vcpus': vcpus, 'mem': memory_mb, 'rp': provider},
                     instance=instance)
            return before
        error = _placement_error(resp)
        if resp.status_code == 409 and (
                error.get('code') == 'placement.concurrent_update'):
            LOG.debug('Placement allocation of %s changed concurrently '
                      '(attempt %d): %s', instance.uuid, attempt,
                      error.get('detail'))
            continue
        if resp.status_code == 409:
            raise InsufficientCapacity(
                instance_uuid=instance.uuid, vcpus=vcpus,
                memory_mb=memory_mb, reason=error.get('detail', resp.text))
        raise AllocationUpdateFailed(
            instance_uuid=instance.uuid,
            reason=f'HTTP {resp.status_code}: '
                   f'{error.get("detail", resp.text)}')
    raise AllocationUpdateFailed(
        instance_uuid=instance.uuid,
        reason=f'changed concurrently {_ATTEMPTS} times in a row')


def _compute_node_provider(context: nova_context.RequestContext,
                           instance: objects.Instance) -> str:
    # The compute node's uuid is its resource provider's uuid.
    node = objects.ComputeNode.get_by_host_and_nodename(
        context, instance.host, instance.node)
    return node.uuid


def _placement_error(resp) -> dict:
    try:
        return resp.json()['errors'][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return {}
