"""The elastic sizing audit: finds where the accounts of a size disagree,
and heals them.

Four accounts of an elastic instance's size should agree: the running
domain (what libvirt reports the guest runs at), the domain's persistent
definition (what it starts at), the instance's record (``nova_ext.sizing``,
live and boot size) and its placement allocation (VCPU and MEMORY_MB on
the resource provider of its compute node). The domain is the truth
(doc/design.md): the record only says what libvirt reported, and the
allocation is never below what the guest can use.

:func:`findings` compares one instance, free of I/O. :func:`run` audits
every elastic instance of the cloud, or of one host, or the ones asked
for: instances are read from every cell, each host's nova-compute is asked
once for all of its domains (``describe_domains``), each compute node's
allocations are read from placement in one request, and with ``fix`` each
instance with a finding that can be healed is healed on its host
(``heal``, the domain winning) and audited again. Each host audited also
gets its burst exposure (``nova_ext.exposure``: capacity, allocated, and
what its elastic guests would add at their maximum). ``xloud-nova-ext
audit`` and ``/os-xloud-audit`` both use it; ``doc/audit.md`` explains
each finding.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable

from nova import context as nova_context
from nova import exception, objects
from nova.i18n import _
from nova.scheduler.client import report as report_client
from nova.servicegroup import api as servicegroup
from oslo_log import log as logging
from oslo_utils import timeutils

from nova_ext import conf, exposure, placement, rpcapi, sizing

LOG = logging.getLogger(__name__)
CONF = conf.CONF

PLACEMENT_BELOW_LIVE = 'placement_below_live'
PLACEMENT_ABOVE_LIVE = 'placement_above_live'
ALLOCATION_MISSING = 'allocation_missing'
RECORD_LIVE_DIFFERS = 'record_live_differs'
RECORD_BOOT_DIFFERS = 'record_boot_differs'
DOMAIN_MISSING = 'domain_missing'
VIRTIO_MEM_UNSETTLED = 'virtio_mem_unsettled'
ADJUSTMENT_STUCK = 'adjustment_stuck'
HOST_UNREACHABLE = 'host_unreachable'

# In the order reports list them for one instance.
KINDS = (ADJUSTMENT_STUCK, DOMAIN_MISSING, ALLOCATION_MISSING,
         PLACEMENT_BELOW_LIVE, PLACEMENT_ABOVE_LIVE, RECORD_LIVE_DIFFERS,
         RECORD_BOOT_DIFFERS, VIRTIO_MEM_UNSETTLED, HOST_UNREACHABLE)
# What the compute host's heal settles; the others need an operator.
HEALABLE = frozenset((ADJUSTMENT_STUCK, PLACEMENT_BELOW_LIVE,
                      PLACEMENT_ABOVE_LIVE, RECORD_LIVE_DIFFERS,
                      RECORD_BOOT_DIFFERS, VIRTIO_MEM_UNSETTLED))

# A host that can run more than placement allows: the scheduler may place
# guests on capacity that is in use.
CRITICAL = 'critical'
WARNING = 'warning'

STATE_RUNNING = 'running'
STATE_PAUSED = 'paused'
STATE_STOPPED = 'stopped'
STATE_MISSING = 'missing'
LIVE_STATES = (STATE_RUNNING, STATE_PAUSED)

# Per server in a report.
IN_SYNC = 'in_sync'
DRIFT = 'drift'
UNKNOWN = 'unknown'

# Exit status of the command line, also the report's ``status``.
EXIT_IN_SYNC = 0
EXIT_DRIFT = 1
EXIT_ERROR = 2
STATUSES = {EXIT_IN_SYNC: 'in_sync', EXIT_DRIFT: 'drift',
            EXIT_ERROR: 'error'}

# ``allocation`` of findings() when placement could not be read.
NOT_READ = object()

_EXPECTED_ATTRS = ['flavor', 'system_metadata']


@dataclasses.dataclass(frozen=True)
class Finding:
    """One disagreement between the accounts of an instance's size."""

    instance_uuid: str
    host: str | None
    kind: str
    severity: str
    message: str
    # The values compared, as the report shows them (sizes are
    # ``{'vcpus', 'memory_mb'}``).
    observed: dict

    @property
    def healable(self) -> bool:
        return self.kind in HEALABLE

    def to_dict(self) -> dict:
        return {'server_id': self.instance_uuid, 'host': self.host,
                'kind': self.kind, 'severity': self.severity,
                'message': self.message, 'observed': dict(self.observed)}


@dataclasses.dataclass(frozen=True)
class Skipped:
    """An elastic instance the audit did not compare, and why."""

    instance_uuid: str
    host: str | None
    reason: str

    def to_dict(self) -> dict:
        return {'server_id': self.instance_uuid, 'host': self.host,
                'reason': self.reason}


@dataclasses.dataclass(frozen=True)
class Healed:
    """What the compute host's heal did for one instance."""

    instance_uuid: str
    host: str
    changes: tuple[str, ...]
    errors: tuple[str, ...]

    def to_dict(self) -> dict:
        return {'server_id': self.instance_uuid, 'host': self.host,
                'changes': list(self.changes), 'errors': list(self.errors)}


@dataclasses.dataclass
class HostSummary:
    host: str
    instances: int = 0
    checked: int = 0
    error: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class AuditReport:
    """Everything one audit found and did.

    ``findings`` is what the audit found; ``remaining`` what is still
    there at its end (after healing with ``fix``, else the same).
    ``errors`` are failures that left something unchecked or unhealed.
    """

    host: str | None = None
    fix: bool = False
    hosts: list[HostSummary] = dataclasses.field(default_factory=list)
    findings: list[Finding] = dataclasses.field(default_factory=list)
    remaining: list[Finding] = dataclasses.field(default_factory=list)
    healed: list[Healed] = dataclasses.field(default_factory=list)
    skipped: list[Skipped] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    # Every elastic instance considered: uuid -> host.
    instances: dict[str, str | None] = dataclasses.field(
        default_factory=dict)
    # The burst exposure of each compute node of the hosts audited
    # (nova_ext.exposure); none when the audit was limited to servers.
    host_exposure: list[exposure.HostExposure] = dataclasses.field(
        default_factory=list)

    @property
    def checked(self) -> int:
        return sum(summary.checked for summary in self.hosts)

    @property
    def exit_code(self) -> int:
        if self.errors:
            return EXIT_ERROR
        if self.remaining:
            return EXIT_DRIFT
        return EXIT_IN_SYNC

    @property
    def status(self) -> str:
        return STATUSES[self.exit_code]

    def server_status(self, instance_uuid: str) -> str:
        """in_sync, drift or unknown (not compared, or host unreachable)."""
        kinds = {finding.kind for finding in self.remaining
                 if finding.instance_uuid == instance_uuid}
        if kinds - {HOST_UNREACHABLE}:
            return DRIFT
        if kinds or any(skipped.instance_uuid == instance_uuid
                        for skipped in self.skipped):
            return UNKNOWN
        return IN_SYNC

    def to_dict(self) -> dict:
        """The stable form of the report (doc/audit.md, schemas.audit)."""
        return {
            'status': self.status,
            'host': self.host,
            'fix': self.fix,
            'checked': self.checked,
            'hosts': [summary.to_dict() for summary in self.hosts],
            'servers': [
                {'server_id': uuid, 'host': host,
                 'status': self.server_status(uuid)}
                for uuid, host in sorted(
                    self.instances.items(),
                    key=lambda item: (item[1] or '', item[0]))],
            'findings': [finding.to_dict() for finding in self.findings],
            'remaining': [finding.to_dict() for finding in self.remaining],
            'healed': [healed.to_dict() for healed in self.healed],
            'skipped': [skipped.to_dict() for skipped in self.skipped],
            'errors': list(self.errors),
            'host_exposure': [node.to_dict()
                              for node in self.host_exposure],
        }


def _size(vcpus: int, memory_mb: int) -> dict:
    return {'vcpus': vcpus, 'memory_mb': memory_mb}


def _describe(size: dict) -> str:
    return _('%(vcpus)d vCPUs / %(memory_mb)d MiB') % size


def _adjust_action_is_new(newest_action) -> bool:
    """Whether nova-api may still be handing this adjustment over.

    The API waits ``[xloud] accept_timeout`` for the host to take it and
    then ends it itself; until then an adjustment nobody runs yet is not
    stuck.
    """
    return (newest_action is not None and
            newest_action.action in sizing.ADJUST_ACTIONS and
            newest_action.start_time is not None and
            not timeutils.is_older_than(newest_action.start_time,
                                        CONF.xloud.accept_timeout))


def skip_reason(instance: objects.Instance, domain: dict, *,
                newest_action=None) -> str | None:
    """Why the instance is not to be compared now, or None.

    An operation in progress changes the domain, the record and placement
    on its own schedule: what the audit would see is a moment of it.
    ``newest_action`` is the instance's newest instance action, needed
    when its task state is the adjustment's.
    """
    if domain.get('adjusting'):
        return _('an adjustment is running on %s') % instance.host
    adjusting = (instance.task_state == sizing.ADJUSTING_TASK_STATE and
                 newest_action is not None and
                 newest_action.action in sizing.ADJUST_ACTIONS)
    if instance.task_state is not None and not adjusting:
        return _('busy (task_state %s)') % instance.task_state
    status = (instance.system_metadata or {}).get(sizing.SYSMETA_STATUS)
    if _adjust_action_is_new(newest_action) and (
            adjusting or status == sizing.STATUS_ADJUSTING):
        return _('an adjustment is being handed to %s') % instance.host
    return None


def findings(instance: objects.Instance, domain: dict, allocation, *,
             newest_action=None) -> list[Finding]:
    """Where the domain, the record and placement disagree.

    ``domain`` is what the host's ``describe_domains`` reported for the
    instance; ``allocation`` the instance's resources on the provider of
    its compute node (``{'VCPU': n, 'MEMORY_MB': n, ...}``), None when it
    holds nothing there, :data:`NOT_READ` when placement could not be
    read. ``newest_action`` is the instance's newest instance action when
    an adjustment is recorded in progress (see :func:`skip_reason`).
    """
    host = instance.host
    size = sizing.ElasticSize.from_instance(instance)
    found = []

    def add(kind: str, severity: str, message: str, **observed) -> None:
        found.append(Finding(instance.uuid, host, kind, severity, message,
                             observed))

    status = (instance.system_metadata or {}).get(sizing.SYSMETA_STATUS)
    in_task = (instance.task_state == sizing.ADJUSTING_TASK_STATE and
               newest_action is not None and
               newest_action.action in sizing.ADJUST_ACTIONS)
    if not domain.get('adjusting') and (
            status == sizing.STATUS_ADJUSTING or in_task):
        request_id = (size.request_id if status == sizing.STATUS_ADJUSTING
                      else newest_action.request_id) or None
        add(ADJUSTMENT_STUCK, WARNING, _(
            'Adjustment %(request)s is recorded as in progress (task_state '
            '%(task_state)s, status %(status)s) but no adjustment runs on '
            '%(host)s: the compute host lost it (nova-compute restarted, or '
            'the request never reached it). Until it is ended the size API '
            'refuses new adjustments of the instance, and Nova its other '
            'operations while the task state is set. Fix ends it as failed '
            'and records the size from the domain.') % {
            'request': request_id, 'task_state': instance.task_state,
            'status': status or None, 'host': host},
            task_state=instance.task_state, xloud_status=status or None,
            request_id=request_id)

    state = domain.get('state')
    if state == STATE_MISSING:
        add(DOMAIN_MISSING, WARNING, _(
            'Nova places the instance on %(host)s, but libvirt there has no '
            'domain for it: its size cannot be compared, and fix cannot '
            'settle it. The instance\'s state and nova-compute\'s log on '
            '%(host)s tell what happened; a hard reboot defines the domain '
            'again.') % {'host': host},
            domain_state=state)
        return found

    record_boot = _size(size.boot_vcpus, size.boot_memory_mb)
    config = domain.get('config')
    if config is not None and config != record_boot:
        add(RECORD_BOOT_DIFFERS, WARNING, _(
            'The record says the domain boots at %(record)s but its '
            'persistent definition on %(host)s says %(config)s: a soft '
            'reboot or a start from the definition runs it at %(config)s, '
            'while the size API shows %(record)s as its boot size. Fix '
            'records the definition\'s size as the boot size.') % {
            'record': _describe(record_boot), 'config': _describe(config),
            'host': host},
            record_boot=record_boot, domain_config=dict(config))

    # A stopped guest runs at nothing; its next start claims and records
    # what it starts with.
    running = domain.get('live')
    if state not in LIVE_STATES or running is None:
        return found
    record_live = _size(size.live_vcpus, size.live_memory_mb)
    if running != record_live:
        add(RECORD_LIVE_DIFFERS, WARNING, _(
            'The record says the guest runs at %(record)s but libvirt on '
            '%(host)s reports %(live)s: the size API and the panel show a '
            'wrong current size. Fix records what libvirt reports.') % {
            'record': _describe(record_live), 'live': _describe(running),
            'host': host},
            record_live=record_live, domain_live=dict(running))

    device = domain.get('virtio_mem')
    if state == STATE_RUNNING and device is not None and (
            device['requested_mb'] != device['plugged_mb']) and not (
            domain.get('adjusting') or sizing.virtio_mem_settling(instance)):
        figures = {'requested': device['requested_mb'],
                   'plugged': device['plugged_mb'], 'host': host}
        if device['requested_mb'] > device['plugged_mb']:
            message = _(
                'The guest\'s virtio-mem device on %(host)s is asked for '
                '%(requested)d MiB but the guest has plugged %(plugged)d '
                'MiB of it: the record and placement count what it was '
                'asked for, which the guest may take at any moment, and it '
                'has not (no virtio_mem driver, or no memory it can online). '
                'Fix asks the device for what the guest holds.') % figures
        else:
            message = _(
                'The guest\'s virtio-mem device on %(host)s is asked for '
                '%(requested)d MiB but the guest still holds %(plugged)d MiB '
                'plugged: blocks in use that it has not given back, counted '
                'in the record and placement. Fix asks the device for what '
                'the guest holds, so that it stops unplugging.') % figures
        add(VIRTIO_MEM_UNSETTLED, WARNING, message,
            virtio_mem=dict(device))

    if allocation is NOT_READ:
        return found
    if allocation is None:
        add(ALLOCATION_MISSING, CRITICAL, _(
            'The instance holds no allocation on the resource provider of '
            'its compute node %(node)s while its guest runs at %(live)s: '
            'placement does not count it, so the host can run more than '
            'placement allows. Fix cannot create an allocation; run '
            '"nova-manage placement heal_allocations --instance %(uuid)s", '
            'then the audit with fix again.') % {
            'node': instance.node, 'live': _describe(running),
            'uuid': instance.uuid},
            domain_live=dict(running), placement=None)
        return found
    allocated = _size(allocation.get(placement.VCPU, 0),
                      allocation.get(placement.MEMORY_MB, 0))
    below = [key for key in ('vcpus', 'memory_mb')
             if allocated[key] < running[key]]
    above = [key for key in ('vcpus', 'memory_mb')
             if allocated[key] > running[key]]
    if below:
        add(PLACEMENT_BELOW_LIVE, CRITICAL, _(
            'Placement holds %(placement)s for the instance but its guest '
            'runs at %(live)s on %(host)s: the host can run more than '
            'placement allows, so the scheduler may place guests on '
            'capacity that is in use. Fix grows the allocation to the live '
            'size where the compute node has room, and reports it where it '
            'has not.') % {
            'placement': _describe(allocated), 'live': _describe(running),
            'host': host},
            placement=allocated, domain_live=dict(running))
    elif above:
        add(PLACEMENT_ABOVE_LIVE, WARNING, _(
            'Placement holds %(placement)s for the instance but its guest '
            'runs at %(live)s on %(host)s: the difference is reserved for '
            'nothing, and no other guest can be placed on it. Fix lowers '
            'the allocation to the live size.') % {
            'placement': _describe(allocated), 'live': _describe(running),
            'host': host},
            placement=allocated, domain_live=dict(running))
    return found


def _valid_domain(domain) -> bool:
    """A DOMAIN as describe_domains documents it (nova_ext.rpcapi)."""
    if not isinstance(domain, dict) or domain.get('state') not in (
            LIVE_STATES + (STATE_STOPPED, STATE_MISSING)):
        return False
    for key in ('live', 'config', 'maximum'):
        size = domain.get(key)
        if size is not None and not (
                isinstance(size, dict) and
                all(type(size.get(k)) is int for k in ('vcpus',
                                                        'memory_mb'))):
            return False
    device = domain.get('virtio_mem')
    if device is not None and not (
            isinstance(device, dict) and
            all(type(device.get(k)) is int for k in ('requested_mb',
                                                      'plugged_mb'))):
        return False
    return isinstance(domain.get('adjusting'), bool)


def _fingerprint(instance: objects.Instance) -> tuple:
    """What changes when an operation touches the instance meanwhile."""
    sysmeta = instance.system_metadata or {}
    return (instance.host, instance.node, instance.vm_state,
            instance.task_state, instance.flavor.flavorid,
            tuple(sorted((key, value) for key, value in sysmeta.items()
                         if key.startswith('xloud_'))))


@dataclasses.dataclass
class _HostGroup:
    context: nova_context.RequestContext
    host: str
    instances: list[objects.Instance]


class _Auditor:
    """One audit run; see :func:`run`."""

    def __init__(self, context: nova_context.RequestContext,
                 report: AuditReport,
                 progress: Callable[[str], None]) -> None:
        self.context = context
        self.report = report
        self.progress = progress
        self.rpcapi = rpcapi.ElasticSizingAPI()
        self.servicegroup = servicegroup.API()
        self.timeout = CONF.xloud.audit_rpc_timeout

    def host_groups(self, host: str | None,
                    instance_uuids: Iterable[str] | None
                    ) -> list[_HostGroup]:
        """The elastic instances to audit, per cell and host."""
        filters = {'deleted': False}
        if host is not None:
            filters['host'] = host
        if instance_uuids is not None:
            filters['uuid'] = sorted(set(instance_uuids))
        cells = [cell for cell in
                 objects.CellMappingList.get_all(self.context)
                 if not cell.is_cell0()]
        if not cells:
            self.report.errors.append(_(
                'No cell is mapped in the API database (nova-manage '
                'cell_v2 list_cells): there is nothing to audit.'))
            return []

        def list_cell(cctxt):
            return cctxt, objects.InstanceList.get_by_filters(
                cctxt, filters, expected_attrs=_EXPECTED_ATTRS)

        results = nova_context.scatter_gather_cells(
            self.context, cells, nova_context.CELL_TIMEOUT, list_cell)
        names = {cell.uuid: cell.identity for cell in cells}
        groups = {}
        for cell_uuid, result in sorted(results.items()):
            if nova_context.is_cell_failure_sentinel(result):
                reason = (_('did not answer in time')
                          if result is nova_context.did_not_respond_sentinel
                          else str(result))
                self.report.errors.append(_(
                    'Cell %(cell)s could not be read: %(reason)s; its '
                    'instances were not audited.') % {
                    'cell': names[cell_uuid], 'reason': reason})
                continue
            cctxt, instances = result
            for instance in instances:
                if not instance.host or not exposure.is_elastic(instance):
                    continue
                key = (cell_uuid, instance.host)
                if key not in groups:
                    groups[key] = _HostGroup(cctxt, instance.host, [])
                groups[key].instances.append(instance)
                self.report.instances[instance.uuid] = instance.host
        return [groups[key] for key in sorted(groups,
                                              key=lambda key: key[1])]

    def audit_host(self, group: _HostGroup,
                   summary: HostSummary) -> list[Finding]:
        """Compare the group's instances; their findings."""
        instances = sorted(group.instances, key=lambda i: i.uuid)
        domains, error = self._describe(group, instances)
        if error is not None:
            summary.error = error
            self.report.errors.append(error)
            return [Finding(instance.uuid, group.host, HOST_UNREACHABLE,
                            WARNING, _(
                                'The instance was not checked: %s') % error,
                            {'error': error})
                    for instance in instances]
        allocations = self._allocations(group, instances, summary)
        found = []
        for instance in instances:
            domain = domains.get(instance.uuid)
            if not _valid_domain(domain):
                self._skip(instance, _(
                    'nova-compute on %(host)s did not describe its domain '
                    '(answered %(answer)r)') % {
                    'host': group.host, 'answer': domain})
                continue
            newest_action = self._newest_action(group.context, instance)
            reason = skip_reason(instance, domain,
                                 newest_action=newest_action)
            if reason is not None:
                self._skip(instance, reason)
                continue
            summary.checked += 1
            found.extend(findings(
                instance, domain, allocations.get(instance.uuid, NOT_READ),
                newest_action=newest_action))
        return self._confirmed(group, instances, found, summary)

    def _describe(self, group: _HostGroup, instances
                  ) -> tuple[dict, str | None]:
        try:
            service = objects.Service.get_by_compute_host(group.context,
                                                          group.host)
        except exception.ComputeHostNotFound:
            return {}, _('host %s runs no nova-compute service Nova '
                         'knows of') % group.host
        if not self.servicegroup.service_is_up(service):
            return {}, _('nova-compute on %s is down (it has not reported '
                         'to Nova recently, or is forced down)') % group.host
        try:
            domains = self.rpcapi.describe_domains(
                group.context, group.host,
                [instance.uuid for instance in instances],
                timeout=self.timeout)
        except Exception as e:
            LOG.warning('nova-compute on %s did not describe its domains: '
                        '%s', group.host, e)
            return {}, _('nova-compute on %(host)s did not describe its '
                         'domains: %(error)s (is it running the elastic '
                         'driver of this version?)') % {
                'host': group.host,
                'error': e.format_message() if isinstance(
                    e, exception.NovaException) else
                f'{type(e).__name__}: {e}'}
        if not isinstance(domains, dict):
            return {}, _('nova-compute on %(host)s answered %(answer)r to '
                         'describe_domains') % {'host': group.host,
                                                'answer': domains}
        return domains, None

    def _allocations(self, group: _HostGroup, instances,
                     summary: HostSummary) -> dict:
        """uuid -> the instance's resources on its compute node's provider
        (None: it holds nothing there); an instance whose allocations
        could not be read is left out."""
        try:
            nodes = {node.hypervisor_hostname: node.uuid for node in
                     objects.ComputeNodeList.get_all_by_host(group.context,
                                                             group.host)}
        except exception.ComputeHostNotFound:
            nodes = {}
        by_provider = collections.defaultdict(list)
        for instance in instances:
            provider = nodes.get(instance.node)
            if provider is None and instance.node is None and len(nodes) == 1:
                provider = next(iter(nodes.values()))
            if provider is None:
                self._placement_error(summary, _(
                    'compute node %(node)s of host %(host)s is not known '
                    'to Nova') % {'node': instance.node, 'host': group.host})
                continue
            by_provider[provider].append(instance.uuid)
        allocations = {}
        for provider, uuids in sorted(by_provider.items()):
            try:
                client = report_client.report_client_singleton()
                consumers = client.get_allocations_for_resource_provider(
                    group.context, provider).allocations
            except Exception as e:
                self._placement_error(summary, _(
                    'the allocations of resource provider %(rp)s (host '
                    '%(host)s) could not be read: %(error)s') % {
                    'rp': provider, 'host': group.host, 'error': e})
                continue
            for uuid in uuids:
                allocation = consumers.get(uuid)
                allocations[uuid] = (None if allocation is None
                                     else allocation.get('resources') or {})
        return allocations

    def _placement_error(self, summary: HostSummary, error: str) -> None:
        message = _('Placement was not compared: %s') % error
        if message not in self.report.errors:
            self.report.errors.append(message)
            summary.error = summary.error or message

    @staticmethod
    def _newest_action(context, instance: objects.Instance):
        # Only an adjustment recorded in progress needs it: one query for
        # those instances, none for the others.
        status = (instance.system_metadata or {}).get(
            sizing.SYSMETA_STATUS)
        if (instance.task_state != sizing.ADJUSTING_TASK_STATE and
                status != sizing.STATUS_ADJUSTING):
            return None
        actions = objects.InstanceActionList.get_by_instance_uuid(
            context, instance.uuid, limit=1)
        return actions[0] if actions else None

    def _confirmed(self, group: _HostGroup, instances, found: list[Finding],
                   summary: HostSummary) -> list[Finding]:
        """The findings whose instance did not change during the audit.

        An operation that ran between reading the instance and asking its
        host (an adjustment ending, a migration starting) would show as
        drift that is not there: such instances are read again and left
        out when they changed.
        """
        suspects = {finding.instance_uuid for finding in found}
        if not suspects:
            return found
        first = {instance.uuid: _fingerprint(instance)
                 for instance in instances if instance.uuid in suspects}
        again = {instance.uuid: instance for instance in
                 objects.InstanceList.get_by_filters(
                     group.context, {'uuid': sorted(suspects)},
                     expected_attrs=_EXPECTED_ATTRS)}
        changed = set()
        for uuid in sorted(suspects):
            instance = again.get(uuid)
            if instance is None or instance.deleted:
                changed.add(uuid)
                self._skip_uuid(uuid, group.host, _(
                    'deleted during the audit'))
            elif _fingerprint(instance) != first[uuid]:
                changed.add(uuid)
                self._skip_uuid(uuid, group.host, _(
                    'changed during the audit; audit it again'))
        summary.checked -= len(changed)
        return [finding for finding in found
                if finding.instance_uuid not in changed]

    def _skip(self, instance: objects.Instance, reason: str) -> None:
        self._skip_uuid(instance.uuid, instance.host, reason)

    def _skip_uuid(self, uuid: str, host: str | None, reason: str) -> None:
        self.report.skipped.append(Skipped(uuid, host, reason))

    def heal(self, group: _HostGroup, found: list[Finding]) -> set[str]:
        """Heal each instance of the group with a healable finding; the
        uuids healed (with or without errors)."""
        wanted = {finding.instance_uuid for finding in found
                  if finding.healable}
        healed = set()
        for instance in sorted(group.instances, key=lambda i: i.uuid):
            if instance.uuid not in wanted:
                continue
            try:
                answer = self.rpcapi.heal(group.context, instance,
                                          timeout=self.timeout)
                changes = tuple(answer.get('changes') or ())
                errors = tuple(answer.get('errors') or ())
            except Exception as e:
                LOG.warning('Could not heal instance %s on %s: %s',
                            instance.uuid, group.host, e)
                error = _('nova-compute on %(host)s did not heal instance '
                          '%(uuid)s: %(error)s') % {
                    'host': group.host, 'uuid': instance.uuid,
                    'error': e.format_message() if isinstance(
                        e, exception.NovaException) else
                    f'{type(e).__name__}: {e}'}
                self.report.errors.append(error)
                changes, errors = (), (error,)
            healed.add(instance.uuid)
            self.report.healed.append(Healed(instance.uuid, group.host,
                                             changes, errors))
        return healed

    def reaudit(self, group: _HostGroup, uuids: set[str],
                summary: HostSummary) -> list[Finding]:
        """Audit the healed instances of a group again, read afresh."""
        instances = [instance for instance in
                     objects.InstanceList.get_by_filters(
                         group.context, {'uuid': sorted(uuids),
                                         'deleted': False},
                         expected_attrs=_EXPECTED_ATTRS)
                     if instance.host == group.host]
        moved = uuids - {instance.uuid for instance in instances}
        for uuid in sorted(moved):
            self._skip_uuid(uuid, group.host, _(
                'moved or deleted while it was healed'))
        again = HostSummary(group.host)
        found = self.audit_host(
            _HostGroup(group.context, group.host, instances), again)
        summary.error = summary.error or again.error
        return found


def run(context: nova_context.RequestContext, host: str | None = None,
        fix: bool = False, *, instance_uuids: Iterable[str] | None = None,
        progress: Callable[[str], None] | None = None) -> AuditReport:
    """Audit the elastic instances of the cloud, of ``host``, or these.

    With ``fix`` every instance with a finding :data:`HEALABLE` is healed
    by its host and audited again; ``progress`` is told about each host
    as it is reached. Unless the audit is limited to ``instance_uuids``,
    each host's burst exposure (``nova_ext.exposure``) is read once it is
    audited (and healed). ``context`` is an admin context.
    """
    progress = progress or (lambda message: None)
    report = AuditReport(host=host, fix=fix)
    auditor = _Auditor(context, report, progress)
    groups = auditor.host_groups(host, instance_uuids)
    for group in groups:
        summary = HostSummary(group.host, instances=len(group.instances))
        report.hosts.append(summary)
        progress(_('%(host)s: %(count)d elastic instances') % {
            'host': group.host, 'count': len(group.instances)})
        found = auditor.audit_host(group, summary)
        report.findings.extend(found)
        if not (fix and any(finding.healable for finding in found)):
            report.remaining.extend(found)
            progress(_summary_line(group.host, summary, found,
                                   _exposure(report, group,
                                             instance_uuids)))
            continue
        healed = auditor.heal(group, found)
        progress(_('%(host)s: healed %(count)d instances, auditing them '
                   'again') % {'host': group.host, 'count': len(healed)})
        report.remaining.extend(finding for finding in found
                                if finding.instance_uuid not in healed)
        again = auditor.reaudit(group, healed, summary)
        report.remaining.extend(again)
        progress(_summary_line(group.host, summary, [
            finding for finding in report.remaining
            if finding.host == group.host],
            _exposure(report, group, instance_uuids)))
    order = {kind: index for index, kind in enumerate(KINDS)}
    for findings_list in (report.findings, report.remaining):
        findings_list.sort(key=lambda finding: (
            finding.host or '', finding.instance_uuid,
            order[finding.kind]))
    return report


def _exposure(report: AuditReport, group: _HostGroup,
              instance_uuids: Iterable[str] | None
              ) -> list[exposure.HostExposure]:
    """The exposure of the group's host, added to the report.

    Its errors are the node's own (``HostExposure.error``): the audit
    reports the same placement failures as errors of its own.
    """
    if instance_uuids is not None:
        return []
    nodes, _errors = exposure.node_exposures(group.context, group.host,
                                             group.instances)
    report.host_exposure.extend(nodes)
    return nodes


def describe_exposure(node: exposure.HostExposure) -> str:
    """One compute node's exposure in a line, as the command prints it."""
    if node.error:
        return _('exposure not read: %s') % node.error
    parts = []
    for label, dimension in ((_('vCPU'), node.vcpus),
                             (_('MiB'), node.memory_mb)):
        if dimension is None:
            continue
        parts.append(_('%(label)s %(allocated)d allocated + %(headroom)d '
                       'to max = %(potential)d of %(capacity)d%(over)s') % {
            'label': label, 'allocated': dimension.allocated,
            'headroom': dimension.headroom,
            'potential': dimension.potential,
            'capacity': dimension.capacity,
            'over': (_(' OVER CAPACITY') if dimension.over_capacity
                     else '')})
    return _('exposure %s') % '; '.join(parts)


def _summary_line(host: str, summary: HostSummary, found: list[Finding],
                  exposures: Iterable[exposure.HostExposure] = ()) -> str:
    if summary.error:
        line = _('%(host)s: %(error)s') % {'host': host,
                                           'error': summary.error}
    else:
        line = _('%(host)s: %(checked)d checked, %(count)d findings') % {
            'host': host, 'checked': summary.checked, 'count': len(found)}
    for node in exposures:
        line += '; ' + (describe_exposure(node) if node.node == host else
                        f'{node.node}: {describe_exposure(node)}')
    return line
