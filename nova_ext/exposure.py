"""Host burst exposure: what each compute host would face if every elastic
guest on it grew to its flavor's maximum.

Per compute node (one per host with libvirt), for VCPU and MEMORY_MB, as
placement counts them on the node's resource provider:

* ``capacity``: ``(total - reserved) * allocation_ratio`` of its
  inventory, the most placement lets consumers hold (rounded down: usages
  are whole units);
* ``allocated``: its usage, what every consumer holds now (the sum of
  current sizes, other guests and migrations included);
* ``headroom``: over the elastic instances Nova places on the node, the
  sum of ``flavor maximum - what the instance holds there``; a dimension
  the instance cannot be adjusted in (``ElasticSize.conflicts``: pinned
  vCPUs, hugepages, an unanswered balloon...) adds nothing;
* ``potential = allocated + headroom``, and ``over_capacity`` when it is
  above ``capacity``.

:func:`report` answers ``/os-xloud-host-exposure`` for every compute host
of every cell, or one; :func:`node_exposures` is the same for one host
whose elastic instances the caller already listed (the audit,
``nova_ext.audit.run``). ``doc/api.md`` describes the answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from nova import context as nova_context
from nova import exception, objects
from nova.i18n import _
from nova.scheduler.client import report as report_client
from oslo_log import log as logging

from nova_ext import compatibility, placement, sizing

LOG = logging.getLogger(__name__)

_EXPECTED_ATTRS = ['flavor', 'system_metadata']
# /resource_providers/{uuid}/inventories answers the same from
# placement's first microversion on.
_PLACEMENT_VERSION = '1.0'


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One resource class of one compute node, in its units."""

    total: int
    reserved: int
    allocation_ratio: float
    allocated: int
    headroom: int

    @property
    def capacity(self) -> int:
        return placement.capacity(self.total, self.reserved,
                                  self.allocation_ratio)

    @property
    def potential(self) -> int:
        return self.allocated + self.headroom

    @property
    def over_capacity(self) -> bool:
        return self.potential > self.capacity

    def to_dict(self) -> dict:
        return {'total': self.total, 'reserved': self.reserved,
                'allocation_ratio': self.allocation_ratio,
                'capacity': self.capacity, 'allocated': self.allocated,
                'headroom': self.headroom, 'potential': self.potential,
                'over_capacity': self.over_capacity}


@dataclasses.dataclass(frozen=True)
class HostExposure:
    """The exposure of one compute node; ``error`` when placement could
    not be read for it (its dimensions are then None)."""

    host: str
    node: str
    resource_provider: str
    elastic_instances: int
    vcpus: Dimension | None = None
    memory_mb: Dimension | None = None
    error: str | None = None

    @property
    def over_capacity(self) -> bool:
        return any(dimension is not None and dimension.over_capacity
                   for dimension in (self.vcpus, self.memory_mb))

    def to_dict(self) -> dict:
        return {
            'host': self.host, 'node': self.node,
            'resource_provider': self.resource_provider,
            'elastic_instances': self.elastic_instances,
            'vcpus': self.vcpus.to_dict() if self.vcpus else None,
            'memory_mb': (self.memory_mb.to_dict() if self.memory_mb
                          else None),
            'over_capacity': self.over_capacity,
            'error': self.error,
        }


@dataclasses.dataclass
class ExposureReport:
    """The exposure of every compute node asked for, by host and node.

    ``errors`` are failures that left hosts out (a cell that did not
    answer, an elastic instance on a node Nova does not know) or a node
    without numbers (its ``error`` says why).
    """

    host: str | None = None
    hosts: list[HostExposure] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return {'host': self.host,
                'hosts': [host.to_dict() for host in self.hosts],
                'errors': list(self.errors)}


def is_elastic(instance: objects.Instance) -> bool:
    """A flavor with a minimum, or a record of this extension (the
    instances the audit considers)."""
    flavor = instance.flavor
    return (sizing.flavor_minimum(flavor, sizing.MINIMUM_CPU) is not None or
            sizing.flavor_minimum(flavor, sizing.MINIMUM_MEMORY) is not None
            or sizing.SYSMETA_FLAVOR in (instance.system_metadata or {}))


def instance_headroom(instance: objects.Instance,
                      resources: dict | None) -> tuple[int, int]:
    """vCPUs and MiB the instance would add to its node's usage at its
    flavor's maximum, from what it holds there (``resources``, None when
    it holds nothing)."""
    resources = resources or {}
    size = sizing.ElasticSize.from_instance(instance)
    pinned = (placement.VCPU not in resources and
              placement.PCPU in resources)
    vcpus = 0
    if compatibility.VCPUS not in size.conflicts and not pinned:
        vcpus = max(0, size.max_vcpus - resources.get(placement.VCPU, 0))
    memory_mb = 0
    if compatibility.MEMORY not in size.conflicts:
        memory_mb = max(0, size.max_memory_mb -
                        resources.get(placement.MEMORY_MB, 0))
    return vcpus, memory_mb


def _placement_json(client, context, path: str) -> dict:
    resp = client.get(path, version=_PLACEMENT_VERSION,
                      global_request_id=context.global_id)
    if resp.status_code != 200:
        raise exception.NovaException(
            _('GET %(path)s answered HTTP %(status)d: %(text)s') % {
                'path': path, 'status': resp.status_code,
                'text': resp.text})
    return resp.json()


def _dimension(inventories: dict, usages: dict, resource_class: str,
               headroom: int) -> Dimension | None:
    inventory = inventories.get(resource_class)
    if inventory is None:
        return None
    return Dimension(total=inventory['total'],
                     reserved=inventory.get('reserved', 0),
                     allocation_ratio=float(
                         inventory.get('allocation_ratio', 1.0)),
                     allocated=usages.get(resource_class, 0),
                     headroom=headroom)


def _node_exposure(context, host: str, node: objects.ComputeNode,
                   instances: list[objects.Instance]) -> HostExposure:
    provider = node.uuid
    client = report_client.report_client_singleton()
    try:
        inventories = _placement_json(
            client, context,
            f'/resource_providers/{provider}/inventories')['inventories']
        consumers = client.get_allocations_for_resource_provider(
            context, provider).allocations
    except Exception as e:
        LOG.warning('Placement could not be read for resource provider %s '
                    '(host %s): %s', provider, host, e)
        return HostExposure(
            host, node.hypervisor_hostname, provider, len(instances),
            error=_('placement could not be read for resource provider '
                    '%(rp)s: %(error)s') % {
                'rp': provider,
                'error': e.format_message() if isinstance(
                    e, exception.NovaException) else
                f'{type(e).__name__}: {e}'})
    # The provider's usages are the sum of its consumers' allocations
    # (what GET .../usages answers), read here with them in one call.
    usages: dict[str, int] = {}
    for allocation in consumers.values():
        for resource_class, amount in allocation['resources'].items():
            usages[resource_class] = usages.get(resource_class, 0) + amount
    vcpus = memory_mb = 0
    for instance in instances:
        held = (consumers.get(instance.uuid) or {}).get('resources')
        grow_vcpus, grow_memory = instance_headroom(instance, held)
        vcpus += grow_vcpus
        memory_mb += grow_memory
    return HostExposure(
        host, node.hypervisor_hostname, provider, len(instances),
        vcpus=_dimension(inventories, usages, placement.VCPU, vcpus),
        memory_mb=_dimension(inventories, usages, placement.MEMORY_MB,
                             memory_mb))


def node_exposures(context: nova_context.RequestContext, host: str,
                   instances: Iterable[objects.Instance],
                   nodes: list[objects.ComputeNode] | None = None
                   ) -> tuple[list[HostExposure], list[str]]:
    """The exposure of each compute node of ``host``, and errors.

    ``instances`` are the host's instances (with flavor and system
    metadata; only the elastic ones count), ``context`` targets its cell;
    ``nodes`` its compute nodes when the caller has them.
    """
    if nodes is None:
        try:
            nodes = list(objects.ComputeNodeList.get_all_by_host(context,
                                                                 host))
        except exception.ComputeHostNotFound:
            nodes = []
    by_node = {node.hypervisor_hostname: [] for node in nodes}
    errors = []
    for instance in instances:
        if instance.host != host or not is_elastic(instance):
            continue
        node_name = instance.node
        if node_name is None and len(nodes) == 1:
            node_name = nodes[0].hypervisor_hostname
        if node_name not in by_node:
            errors.append(_(
                'Elastic instance %(uuid)s is placed on compute node '
                '%(node)s of host %(host)s, which Nova does not know: its '
                'headroom is not counted.') % {
                'uuid': instance.uuid, 'node': node_name, 'host': host})
            continue
        by_node[node_name].append(instance)
    exposures = [
        _node_exposure(context, host, node,
                       sorted(by_node[node.hypervisor_hostname],
                              key=lambda instance: instance.uuid))
        for node in sorted(nodes, key=lambda node: node.hypervisor_hostname)]
    errors.extend(exposure.error for exposure in exposures
                  if exposure.error)
    return exposures, errors


def report(context: nova_context.RequestContext,
           host: str | None = None) -> ExposureReport:
    """The exposure of every compute node of every cell, or of ``host``.

    ``context`` is an admin context. Raises ComputeHostNotFound when
    ``host`` names no compute node in any cell that answered.
    """
    result = ExposureReport(host=host)
    cells = [cell for cell in objects.CellMappingList.get_all(context)
             if not cell.is_cell0()]

    def list_cell(cctxt):
        try:
            nodes = list(objects.ComputeNodeList.get_all(cctxt)
                         if host is None else
                         objects.ComputeNodeList.get_all_by_host(cctxt, host))
        except exception.ComputeHostNotFound:
            nodes = []
        if not nodes:
            return cctxt, [], []
        instances = objects.InstanceList.get_by_filters(
            cctxt, {'deleted': False,
                    'host': sorted({node.host for node in nodes})},
            expected_attrs=_EXPECTED_ATTRS)
        return cctxt, nodes, list(instances)

    results = nova_context.scatter_gather_cells(
        context, cells, nova_context.CELL_TIMEOUT, list_cell)
    names = {cell.uuid: cell.identity for cell in cells}
    answered = 0
    for cell_uuid, outcome in sorted(results.items()):
        if nova_context.is_cell_failure_sentinel(outcome):
            reason = (_('did not answer in time')
                      if outcome is nova_context.did_not_respond_sentinel
                      else str(outcome))
            result.errors.append(_(
                'Cell %(cell)s could not be read: %(reason)s; its hosts '
                'are not shown.') % {'cell': names[cell_uuid],
                                     'reason': reason})
            continue
        answered += 1
        cctxt, nodes, instances = outcome
        nodes_by_host: dict[str, list[objects.ComputeNode]] = {}
        for node in nodes:
            nodes_by_host.setdefault(node.host, []).append(node)
        instances_by_host: dict[str, list[objects.Instance]] = {}
        for instance in instances:
            instances_by_host.setdefault(instance.host, []).append(instance)
        for node_host in sorted(nodes_by_host):
            exposures, errors = node_exposures(
                cctxt, node_host, instances_by_host.get(node_host, []),
                nodes=nodes_by_host[node_host])
            result.hosts.extend(exposures)
            result.errors.extend(errors)
    result.hosts.sort(key=lambda exposure: (exposure.host, exposure.node))
    if host is not None and not result.hosts and answered == len(cells):
        raise exception.ComputeHostNotFound(host=host)
    return result
