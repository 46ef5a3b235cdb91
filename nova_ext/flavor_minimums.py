"""Apply a flavor's current minimums to the instances booted from it.

Nova copies the flavor into every instance at boot (``instance.flavor``,
stored in the cell's ``instance_extra``) and into its RequestSpec (the API
database). That copy, not the flavor, governs the instance: the driver
regenerates its domain from it and the size API takes its bounds from it
(``nova_ext.sizing``). A flavor's minimums (and its memory model) edited
later therefore reach new instances only. :func:`report` tells, per cell,
how many instances of a flavor carry its current minimums; :func:`apply`
writes them into the embedded copies.

An instance *carries* the flavor's minimums when the minimum extra specs of
its embedded flavor are exactly what :func:`apply` writes: the flavor's
effective value under each scoped key (``xloud:minimum_cpu`` /
``xloud:minimum_memory``), no deprecated unscoped key, and neither key
where the flavor has no minimum; and ``xloud:memory_model`` and
``xloud:autosize`` as the flavor has them (or not at all). A running
domain keeps the memory device it was started with (the driver reads
which one it has); the copy's memory model decides the next domain
generated for it, its ``xloud:autosize`` what the autopilot sizes.
Nothing else of the copy is touched: it remains Nova's snapshot of the
flavor as it was at boot.

Each instance is written only while no operation owns it. Nova's
``Instance.save()`` writes ``instance_extra`` (the embedded flavor) before,
and independently of, its conditional update of the instance row, so a
flavor saved together with ``expected_task_state=[None]`` would reach a
busy instance all the same. The apply therefore first saves the instance on
the condition that no task state is set (and its vm_state is the one read),
and writes the flavor copy only once that succeeded; a busy instance is
reported and left as it was. Its RequestSpec follows.

No size is changed here. A recorded size below the new minimum stays: the
guest keeps running at it and is reported (``below_minimum``) so that an
operator adjusts it. An instance whose size was never recorded (its size
derives from its embedded minimums) gets the size it has recorded, in the
same conditional save, so that the new minimums change neither what the
size API shows nor the size its next regenerated domain boots at.
"""

from __future__ import annotations

import dataclasses

from nova import context as nova_context
from nova import exception, objects
from nova.i18n import _
from oslo_log import log as logging
from oslo_utils import timeutils

from nova_ext import conf, sizing

LOG = logging.getLogger(__name__)
CONF = conf.CONF

MINIMUM_KEYS = (sizing.MINIMUM_CPU, sizing.MINIMUM_MEMORY)
# What an instance carries of its flavor's elastic settings.
_ALL_KEYS = MINIMUM_KEYS + tuple(sizing.LEGACY_KEYS[key]
                                 for key in MINIMUM_KEYS) + (
    sizing.MEMORY_MODEL, sizing.AUTOSIZE)
_EXPECTED_ATTRS = ['flavor', 'system_metadata']

UPDATED = 'updated'
BUSY = 'busy'
ERROR = 'error'


def target_specs(flavor: objects.Flavor) -> dict[str, str]:
    """The elastic extra specs an instance of ``flavor`` should carry.

    The flavor's value of each minimum (the scoped key, else the
    deprecated one: ``sizing.flavor_minimum_spec``), under the scoped key,
    its memory model (``xloud:memory_model``) and what the autopilot sizes
    (``xloud:autosize``) when it sets them.
    """
    target = {}
    for key in MINIMUM_KEYS:
        found = sizing.flavor_minimum_spec(flavor, key)
        if found is not None:
            target[key] = str(found[1])
    for key in (sizing.MEMORY_MODEL, sizing.AUTOSIZE):
        value = (flavor.extra_specs or {}).get(key)
        if value is not None:
            target[key] = value
    return target


def with_minimums(extra_specs: dict | None,
                  target: dict[str, str]) -> dict[str, str]:
    """``extra_specs`` with its minimum keys replaced by ``target``."""
    specs = {key: value for key, value in (extra_specs or {}).items()
             if key not in _ALL_KEYS}
    specs.update(target)
    return specs


def carries(flavor: objects.Flavor, target: dict[str, str]) -> bool:
    """Whether an embedded ``flavor`` holds exactly the ``target`` specs."""
    specs = flavor.extra_specs or {}
    return {key: specs[key] for key in _ALL_KEYS if key in specs} == target


def _with_flavor_specs(instance: objects.Instance,
                       target: dict[str, str]) -> objects.Instance:
    """A copy of ``instance`` whose embedded flavor carries ``target``
    (to size it as it will be, without changing it)."""
    probe = instance.obj_clone()
    probe.flavor.extra_specs = with_minimums(probe.flavor.extra_specs,
                                             target)
    return probe


@dataclasses.dataclass(frozen=True)
class Standing:
    """One instance's size against the floors the target minimums give."""

    size: sizing.ElasticSize
    floor_vcpus: int
    floor_memory_mb: int
    # Whether the compute recorded its size for its flavor; if not, the
    # size is derived from the embedded flavor's minimums.
    recorded: bool

    @classmethod
    def of(cls, instance: objects.Instance,
           target: dict[str, str]) -> Standing:
        size = sizing.ElasticSize.from_instance(instance)
        if carries(instance.flavor, target):
            floors = size
        else:
            floors = sizing.ElasticSize.from_instance(
                _with_flavor_specs(instance, target))
        recorded = (instance.system_metadata or {}).get(
            sizing.SYSMETA_FLAVOR) == instance.flavor.flavorid
        return cls(size, floors.floor_vcpus, floors.floor_memory_mb,
                   recorded)

    @property
    def below_minimum(self) -> bool:
        """The recorded size it runs or boots at is below the floor."""
        size = self.size
        return (min(size.live_vcpus, size.boot_vcpus) < self.floor_vcpus or
                min(size.live_memory_mb, size.boot_memory_mb) <
                self.floor_memory_mb)


@dataclasses.dataclass(frozen=True)
class ServerOutcome:
    """What the apply did with one instance that did not carry the
    flavor's minimums."""

    server_id: str
    cell: str
    result: str
    standing: Standing | None
    message: str | None = None

    @property
    def below_minimum(self) -> bool:
        return self.standing is not None and self.standing.below_minimum

    def to_dict(self) -> dict:
        size = self.standing.size if self.standing else None
        return {
            'server_id': self.server_id,
            'cell': self.cell,
            'result': self.result,
            'below_minimum': self.below_minimum,
            'recorded': bool(self.standing and self.standing.recorded),
            'current_vcpus': size.live_vcpus if size else None,
            'current_memory_mb': size.live_memory_mb if size else None,
            'boot_vcpus': size.boot_vcpus if size else None,
            'boot_memory_mb': size.boot_memory_mb if size else None,
            'message': self.message,
        }


@dataclasses.dataclass
class CellSummary:
    uuid: str
    name: str | None
    instances: int = 0
    current: int = 0
    busy: int = 0
    below_minimum: int = 0
    error: str | None = None

    @property
    def stale(self) -> int:
        return self.instances - self.current

    def count(self, instance: objects.Instance, standing: Standing,
              target: dict[str, str]) -> None:
        self.instances += 1
        if carries(instance.flavor, target):
            self.current += 1
        elif instance.task_state is not None:
            self.busy += 1
        if standing.below_minimum:
            self.below_minimum += 1

    def to_dict(self) -> dict:
        return {'uuid': self.uuid, 'name': self.name,
                'instances': self.instances, 'current': self.current,
                'stale': self.stale, 'busy': self.busy,
                'below_minimum': self.below_minimum, 'error': self.error}


@dataclasses.dataclass
class Report:
    """How the instances of a flavor stand, after an apply if one ran."""

    flavor: objects.Flavor
    cells: list[CellSummary] = dataclasses.field(default_factory=list)
    # Only for an apply: the instances it found not carrying the minimums.
    servers: list[ServerOutcome] | None = None

    def total(self, name: str) -> int:
        return sum(getattr(cell, name) for cell in self.cells)

    @property
    def errors(self) -> list[str]:
        return [cell.error for cell in self.cells if cell.error]

    def to_dict(self) -> dict:
        flavor = self.flavor
        body = {
            'flavor': {
                'id': flavor.flavorid,
                'name': flavor.name,
                'vcpus': flavor.vcpus,
                'memory_mb': flavor.memory_mb,
                'minimum_cpu': sizing.flavor_minimum(flavor,
                                                     sizing.MINIMUM_CPU),
                'minimum_memory': sizing.flavor_minimum(
                    flavor, sizing.MINIMUM_MEMORY),
                'memory_model': sizing.memory_model(flavor),
            },
            'memory_floor_mb': CONF.xloud.memory_floor_mb,
            'instances': self.total('instances'),
            'current': self.total('current'),
            'stale': self.total('stale'),
            'busy': self.total('busy'),
            'below_minimum': self.total('below_minimum'),
            'cells': [cell.to_dict() for cell in self.cells],
            'errors': self.errors,
        }
        if self.servers is not None:
            body['updated'] = sum(server.result == UPDATED
                                  for server in self.servers)
            body['servers'] = [server.to_dict() for server in self.servers]
        return body


def _cell_instances(context: nova_context.RequestContext,
                    flavor: objects.Flavor):
    """``[(summary, cell context, instances or None)]`` of every cell but
    cell0 (instances that never booted), read in parallel."""
    cells = [cell for cell in objects.CellMappingList.get_all(context)
             if not cell.is_cell0()]
    # As Nova's own flavor filter of the server list.
    filters = {'deleted': False, 'instance_type_id': flavor.id}

    def list_cell(cctxt):
        return cctxt, objects.InstanceList.get_by_filters(
            cctxt, filters, sort_keys=['uuid'], sort_dirs=['asc'],
            expected_attrs=_EXPECTED_ATTRS)

    results = nova_context.scatter_gather_cells(
        context, cells, nova_context.CELL_TIMEOUT, list_cell)
    found = []
    for cell in sorted(cells, key=lambda cell: (cell.name or '', cell.uuid)):
        summary = CellSummary(cell.uuid, cell.name or None)
        result = results.get(cell.uuid, nova_context.did_not_respond_sentinel)
        if nova_context.is_cell_failure_sentinel(result):
            reason = (_('did not answer in time')
                      if result is nova_context.did_not_respond_sentinel
                      else str(result))
            summary.error = _('Cell %(cell)s could not be read: '
                              '%(reason)s; its instances are not counted.'
                              ) % {'cell': cell.identity, 'reason': reason}
            found.append((summary, None, None))
            continue
        cctxt, instances = result
        found.append((summary, cctxt, instances))
    return found


def report(context: nova_context.RequestContext,
           flavor: objects.Flavor) -> Report:
    """How many instances of ``flavor`` carry its minimums, per cell.

    ``context`` must be allowed to read every project's instances.
    """
    target = target_specs(flavor)
    result = Report(flavor)
    for summary, _cctxt, instances in _cell_instances(context, flavor):
        result.cells.append(summary)
        for instance in instances or ():
            summary.count(instance, Standing.of(instance, target), target)
    return result


def apply(context: nova_context.RequestContext,
          flavor: objects.Flavor) -> Report:
    """Write ``flavor``'s minimums into its instances' embedded flavors
    and RequestSpecs; the report of how they stand afterwards.

    Instances that already carry them are not written. A busy instance
    (a task state set) is skipped, and so is one whose write fails; each
    is reported with the reason.
    """
    target = target_specs(flavor)
    result = Report(flavor, servers=[])
    for summary, cctxt, instances in _cell_instances(context, flavor):
        result.cells.append(summary)
        for instance in instances or ():
            if carries(instance.flavor, target):
                summary.count(instance, Standing.of(instance, target),
                              target)
                continue
            outcome, instance = _apply_one(context, cctxt, instance, target,
                                           summary)
            if outcome is None:
                continue
            result.servers.append(outcome)
            summary.count(instance, outcome.standing or Standing.of(
                instance, target), target)
    LOG.info('Applied the minimums %(target)s of flavor %(flavor)s: '
             '%(updated)d instances updated, %(stale)d left stale',
             {'target': target, 'flavor': flavor.flavorid,
              'updated': sum(server.result == UPDATED
                             for server in result.servers),
              'stale': result.total('stale')})
    return result


def _apply_one(context: nova_context.RequestContext,
               cctxt: nova_context.RequestContext,
               instance: objects.Instance, target: dict[str, str],
               summary: CellSummary):
    """Update one instance; ``(outcome, instance)``, outcome None when it
    needs nothing (deleted, or brought up to date meanwhile)."""
    cell = summary.name or summary.uuid
    try:
        # The newest copy: the write below must not undo anything saved
        # since the cell was listed.
        instance.refresh()
    except exception.InstanceNotFound:
        return None, instance
    if carries(instance.flavor, target):
        return None, instance
    standing = Standing.of(instance, target)
    if instance.task_state is not None:
        return ServerOutcome(
            instance.uuid, cell, BUSY, standing, _busy(instance.task_state)
        ), instance
    if not standing.recorded:
        _pin_size(instance, standing.size)
    try:
        # Nova's conditional save: refused once an operation took the
        # instance. The embedded flavor is written only after it (see the
        # module's docstring).
        instance.updated_at = timeutils.utcnow()
        instance.save(expected_task_state=[None],
                      expected_vm_state=[instance.vm_state])
    except exception.InstanceUpdateConflict as e:
        LOG.info('Not applying the flavor minimums: %s', e,
                 instance=instance)
        try:
            instance.refresh()
        except exception.InstanceNotFound:
            return None, instance
        return ServerOutcome(instance.uuid, cell, BUSY, standing, _busy(
            instance.task_state)), instance
    except exception.InstanceNotFound:
        return None, instance
    try:
        instance.flavor.extra_specs = with_minimums(
            instance.flavor.extra_specs, target)
        instance.save()
    except Exception as e:
        LOG.exception('Could not save the minimums in the embedded flavor',
                      instance=instance)
        return ServerOutcome(instance.uuid, cell, ERROR, standing, _(
            'The embedded flavor could not be saved: %s; nothing was '
            'changed.') % e), instance
    notes = [_below(standing) if standing.below_minimum else None,
             None if standing.recorded else _pinned(standing),
             _request_spec(context, instance, target)]
    message = ' '.join(str(note) for note in notes if note) or None
    return ServerOutcome(instance.uuid, cell, UPDATED, standing,
                         message), instance


def _pin_size(instance: objects.Instance, size: sizing.ElasticSize) -> None:
    """Record the size an instance derives from its embedded minimums.

    An instance whose size the compute never recorded (booted before its
    flavor had minimums, or by another driver) would otherwise take a new
    boot and live size from the new minimums: the size API would show
    what it does not run, and its next regenerated domain would boot at
    it. Saved in the conditional save, like the compute's records
    (``nova_ext.sizing``), without ``xloud_updated_at``: its size did not
    change.
    """
    sysmeta = dict(instance.system_metadata or {})
    sysmeta.update({
        sizing.SYSMETA_FLAVOR: instance.flavor.flavorid,
        sizing.SYSMETA_BOOT_VCPUS: str(size.boot_vcpus),
        sizing.SYSMETA_BOOT_MEMORY: str(size.boot_memory_mb),
        sizing.SYSMETA_LIVE_VCPUS: str(size.live_vcpus),
        sizing.SYSMETA_LIVE_MEMORY: str(size.live_memory_mb),
    })
    instance.system_metadata = sysmeta


def _request_spec(context: nova_context.RequestContext,
                  instance: objects.Instance,
                  target: dict[str, str]) -> str | None:
    """Bring the RequestSpec's flavor copy in line; a message when it
    could not be."""
    try:
        spec = objects.RequestSpec.get_by_instance_uuid(context,
                                                        instance.uuid)
    except exception.RequestSpecNotFound:
        return _('It has no RequestSpec to update.')
    try:
        if spec.flavor.flavorid != instance.flavor.flavorid:
            # Another flavor's copy (a move in progress was recorded);
            # not this flavor's to change.
            return _('Its RequestSpec holds flavor %s and was left as it '
                     'is.') % spec.flavor.flavorid
        if carries(spec.flavor, target):
            return None
        spec.flavor.extra_specs = with_minimums(spec.flavor.extra_specs,
                                                target)
        spec.save()
    except Exception as e:
        LOG.exception('Could not save the minimums in the RequestSpec',
                      instance=instance)
        return _('Its RequestSpec could not be updated (%s); '
                 'xloud-flavor-sync refreshes it.') % e
    return None


def _pinned(standing: Standing) -> str:
    size = standing.size
    return _('Its size was not recorded; the size it has (%(vcpus)d vCPUs '
             '/ %(memory)d MiB) is now, so that the new minimums do not '
             'change it.') % {'vcpus': size.live_vcpus,
                              'memory': size.live_memory_mb}


def _busy(task_state: str | None) -> str:
    return _('An operation is in progress (task_state %s): skipped, '
             'nothing changed; apply again once it has ended.') % task_state


def _below(standing: Standing) -> str:
    size = standing.size
    return _('Its recorded size (%(vcpus)d vCPUs / %(memory)d MiB, booting '
             'at %(boot_vcpus)d vCPUs / %(boot_memory)d MiB) is below the '
             'minimum of %(min_vcpus)d vCPUs / %(min_memory)d MiB: it keeps '
             'running as it is; adjust it to the minimum.') % {
        'vcpus': size.live_vcpus, 'memory': size.live_memory_mb,
        'boot_vcpus': size.boot_vcpus, 'boot_memory': size.boot_memory_mb,
        'min_vcpus': standing.floor_vcpus,
        'min_memory': standing.floor_memory_mb}
