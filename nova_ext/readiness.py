"""Whether a server can take a new size now, how much it uses, and what
size would fit it (doc/readiness.md).

Built by nova-api from what the compute host read of the guest
(``ElasticSizingEndpoint.describe_guests``: its balloon, its guest agent,
its hot-pluggable vCPUs, its CPU time) and from what nova-api knows
itself (lock, state, the flavor's constraints, the record). Everything
here is plain data in and out; the controller does the asking.
"""

from __future__ import annotations

import dataclasses
import datetime
import math

import jsonschema
from nova import objects, utils
from nova.compute import vm_states
from nova.i18n import _

from nova_ext import autopilot, compatibility, conf, sizing

CONF = conf.CONF

BALLOON_ACTIVE = 'active'
BALLOON_SILENT = 'silent'
BALLOON_NO_STATISTICS = 'no_statistics'
BALLOON_NO_DEVICE = 'no_device'
UNKNOWN = 'unknown'
BALLOON_STATES = (BALLOON_ACTIVE, BALLOON_SILENT, BALLOON_NO_STATISTICS,
                  BALLOON_NO_DEVICE, UNKNOWN)
AGENT_STATES = (*sizing.GUEST_AGENT_STATES, UNKNOWN)
HOTPLUG_POSSIBLE = 'possible'
HOTPLUG_NOT_POSSIBLE = 'not_possible'
HOTPLUG_STATES = (HOTPLUG_POSSIBLE, HOTPLUG_NOT_POSSIBLE, UNKNOWN)
# A virtio-mem device: the guest holds what it was asked to add (more
# than nothing), nothing was asked, it holds less and is taking blocks,
# it has taken none since it started, it holds more than asked.
VIRTIO_MEM_PLUGGED = 'plugged'
VIRTIO_MEM_IDLE = 'idle'
VIRTIO_MEM_PLUGGING = 'plugging'
VIRTIO_MEM_NOT_PLUGGING = 'not_plugging'
VIRTIO_MEM_UNPLUGGING = 'unplugging'
VIRTIO_MEM_STATES = (VIRTIO_MEM_PLUGGED, VIRTIO_MEM_IDLE,
                     VIRTIO_MEM_PLUGGING, VIRTIO_MEM_NOT_PLUGGING,
                     VIRTIO_MEM_UNPLUGGING, UNKNOWN)

MEMORY_STEP_MB = sizing.MEMORY_STEP_MB

ADJUSTABLE_STATES = (vm_states.ACTIVE, vm_states.STOPPED)


_count = {'type': 'integer', 'minimum': 0}
_nullable_count = {'type': ['integer', 'null'], 'minimum': 0}
_size = {
    'type': 'object',
    'properties': {'vcpus': {'type': 'integer', 'minimum': 1},
                   'memory_mb': {'type': 'integer', 'minimum': 1}},
    'required': ['vcpus', 'memory_mb'],
}
# One autopilot decision (nova_ext.autopilot.Decision), as a compute host
# sends it and the API shows it.
AUTOPILOT_DECISION_SCHEMA = {
    'type': 'object',
    'properties': {
        'dimension': {'enum': list(autopilot.DIMENSIONS)},
        'action': {'enum': [autopilot.GROW, autopilot.SHRINK,
                            autopilot.HOLD, autopilot.SKIPPED]},
        'current': {'type': ['integer', 'null']},
        'target': {'type': ['integer', 'null']},
        'reason': {'type': 'string'},
    },
    'required': ['dimension', 'action', 'current', 'target', 'reason'],
    'additionalProperties': False,
}
# GUEST as ElasticSizingEndpoint.describe_guests sends it: what a host
# answers is checked before anything is built from it.
GUEST_SCHEMA = {
    'type': 'object',
    'properties': {
        'size': _size,
        'guest': {
            'type': 'object',
            'properties': {
                'agent': {'enum': list(sizing.GUEST_AGENT_STATES)},
                'online_vcpus': _nullable_count,
                'available_memory_mb': _nullable_count,
                'usable_memory_mb': _nullable_count,
                'agent_error': {'type': ['string', 'null']},
            },
            'required': ['agent', 'online_vcpus', 'available_memory_mb',
                         'usable_memory_mb', 'agent_error'],
        },
        'balloon_device': {'type': 'boolean'},
        'stats_period': _count,
        'stats_fresh': {'type': 'boolean'},
        'hotpluggable_vcpus': _count,
        'machine_type': {'type': ['string', 'null']},
        'cpu_time_ns': _count,
        # Sent by compute hosts of this release on; null without a device.
        'virtio_mem': {
            'oneOf': [
                {'type': 'object',
                 'properties': {'requested_mb': _count, 'plugged_mb': _count,
                                'size_mb': _count},
                 'required': ['requested_mb', 'plugged_mb', 'size_mb']},
                {'type': 'null'},
            ],
        },
        'busy': {
            'oneOf': [
                {'type': 'object',
                 'properties': {
                     'vcpus': {'type': 'number', 'minimum': 0},
                     'window_seconds': {'type': 'integer', 'minimum': 1}},
                 'required': ['vcpus', 'window_seconds']},
                {'type': 'null'},
            ],
        },
        # Sent by compute hosts of this release on: the host's
        # [xloud_autopilot] mode and its last decisions for the guest.
        'autopilot': {
            'type': 'object',
            'properties': {
                'host_mode': {'enum': list(sizing.AUTOPILOT_MODES)},
                'report': {'oneOf': [{'type': 'null'}, {
                    'type': 'object',
                    'properties': {
                        'mode': {'enum': list(sizing.AUTOPILOT_MODES)},
                        'dimensions': {'type': 'array', 'items': {
                            'enum': list(autopilot.DIMENSIONS)}},
                        'decisions': {'type': 'array',
                                      'items': AUTOPILOT_DECISION_SCHEMA},
                        'as_of': {'type': 'string'},
                    },
                    'required': ['mode', 'dimensions', 'decisions',
                                 'as_of'],
                }]},
            },
            'required': ['host_mode', 'report'],
        },
        'as_of': {'type': 'string'},
    },
    'required': ['size', 'guest', 'balloon_device', 'stats_period',
                 'stats_fresh', 'hotpluggable_vcpus', 'machine_type',
                 'cpu_time_ns', 'busy', 'as_of'],
}
_FAILED_SCHEMA = {
    'type': 'object',
    'properties': {'error': {'type': 'string'}, 'size': _size},
    'required': ['error'],
}


@dataclasses.dataclass(frozen=True)
class Observed:
    """What the compute host answered for one guest (GUEST of
    ``describe_guests``), or why there is nothing."""

    guest: dict | None
    error: str | None = None
    # The live size the host reported, also for a guest it could not
    # read otherwise (a paused one): ``{'vcpus', 'memory_mb'}``.
    size: dict | None = None

    @classmethod
    def failed(cls, error: str) -> Observed:
        return cls(None, error)

    @classmethod
    def from_host(cls, answer) -> Observed:
        failed = isinstance(answer, dict) and 'error' in answer
        try:
            jsonschema.validate(answer,
                                _FAILED_SCHEMA if failed else GUEST_SCHEMA)
        except jsonschema.ValidationError as e:
            return cls.failed(_('The compute host described the guest in '
                                'a form this API does not know: '
                                '%s') % e.message)
        if failed:
            return cls(None, answer['error'], answer.get('size'))
        return cls(answer, None, answer['size'])


def describe(instance: objects.Instance, size: sizing.ElasticSize,
             observed: Observed) -> dict:
    """``{'guest', 'readiness', 'utilisation', 'recommendation'}`` of the
    API's SIZE (``nova_ext.api.schemas``)."""
    guest = observed.guest
    # With the PCI devices Neutron ports brought, as the adjustment
    # itself checks (needs ``pci_requests``, loaded by the list).
    conflicts = compatibility.instance_conflicts(instance, devices=True)
    balloon = _balloon(instance, guest)
    agent = UNKNOWN if guest is None else guest['guest']['agent']
    hotplug = UNKNOWN
    if guest is not None:
        hotplug = (HOTPLUG_POSSIBLE if guest['hotpluggable_vcpus']
                   else HOTPLUG_NOT_POSSIBLE)
    migrated = migrated_since_boot(instance)
    virtio_mem = _virtio_mem(instance, size, guest)
    reasons = {
        compatibility.VCPUS: _vcpus_reason(instance, size, conflicts, guest,
                                           hotplug),
        compatibility.MEMORY: _memory_reason(instance, size, conflicts,
                                             balloon, virtio_mem),
    }
    usage = _utilisation(guest)
    return {
        'guest': _guest_view(instance, guest),
        'readiness': {
            'as_of': None if guest is None else guest['as_of'],
            'error': observed.error,
            'balloon': balloon,
            'guest_agent': agent,
            'vcpu_hotplug': hotplug,
            'machine_type': None if guest is None else guest['machine_type'],
            'virtio_mem': virtio_mem,
            'migrated_since_boot': migrated,
            'last_outcome': size.status or None,
            'adjustable': {dimension: reason is None
                           for dimension, reason in reasons.items()},
            'reasons': reasons,
            'warnings': _warnings(guest, balloon, agent, migrated,
                                  virtio_mem),
        },
        'utilisation': usage,
        'recommendation': _recommendation(size, conflicts, usage,
                                          virtio_mem is not None),
        'autopilot': autopilot_view(instance, guest),
    }


def autopilot_view(instance: objects.Instance, guest: dict | None) -> dict:
    """The instance's autopilot setting, and what its compute host's
    autopilot last decided (``guest`` as the host answered, or None)."""
    answered = (guest or {}).get('autopilot')
    host_mode = answered['host_mode'] if answered else sizing.AUTOPILOT_OFF
    setting = sizing.autosize(instance, host_mode)
    report = answered['report'] if answered else None
    decisions = report['decisions'] if report else []
    recommended = None
    moves = {decision['dimension']: decision['target']
             for decision in decisions
             if decision['action'] in autopilot.DIRECTIONS}
    if setting.mode == sizing.AUTOPILOT_RECOMMEND and moves:
        recommended = {'vcpus': moves.get(autopilot.VCPUS),
                       'memory_mb': moves.get(autopilot.MEMORY)}
    return {
        'dimensions': list(setting.dimensions),
        'dimensions_from': setting.dimensions_from,
        'instance_mode': setting.instance_mode,
        'host_mode': answered['host_mode'] if answered else None,
        'mode': setting.mode if answered else None,
        'decisions': decisions,
        'as_of': report['as_of'] if report else None,
        'recommended': recommended,
    }


def _guest_view(instance: objects.Instance, guest: dict | None) -> dict:
    """The guest's own view: as read just now, else as last recorded."""
    if guest is not None:
        view = guest['guest']
        return {'agent': view['agent'],
                'online_vcpus': view['online_vcpus'],
                'available_memory_mb': view['available_memory_mb'],
                'usable_memory_mb': view['usable_memory_mb'],
                'as_of': guest['as_of']}
    record = sizing.guest_record(instance)
    if record is None:
        return {'agent': None, 'online_vcpus': None,
                'available_memory_mb': None, 'usable_memory_mb': None,
                'as_of': None}
    return {'agent': record.agent, 'online_vcpus': record.online_vcpus,
            'available_memory_mb': record.available_memory_mb,
            'usable_memory_mb': record.usable_memory_mb,
            'as_of': utils.isotime(record.as_of)}


def _balloon(instance: objects.Instance, guest: dict | None) -> str:
    if guest is None:
        return UNKNOWN
    if not guest['balloon_device']:
        return BALLOON_NO_DEVICE
    if guest['stats_fresh']:
        return BALLOON_ACTIVE
    period = guest['stats_period']
    since_start = sizing.since_start(instance)
    if not period or since_start is None:
        # Not collected, or a guest started before this release recorded
        # starts: its silence proves nothing.
        return BALLOON_NO_STATISTICS
    silent_after = datetime.timedelta(
        seconds=CONF.xloud.balloon_silent_after + 2 * period)
    if since_start < silent_after:
        return BALLOON_NO_STATISTICS
    return BALLOON_SILENT


def _virtio_mem(instance: objects.Instance, size: sizing.ElasticSize,
                guest: dict | None) -> dict | None:
    """The readiness view's ``virtio_mem``: None for a balloon guest."""
    if guest is not None and guest.get('virtio_mem') is not None:
        device = guest['virtio_mem']
    elif size.memory_model != sizing.MEMORY_MODEL_VIRTIO_MEM or (
            guest is not None and 'virtio_mem' in guest):
        # Its domain has no device (its flavor says balloon, or the host
        # read a domain generated with the balloon).
        return None
    else:
        # Not read, or read by a compute host that does not send it.
        return {'state': UNKNOWN, 'requested_mb': None, 'plugged_mb': None}
    requested, plugged = device['requested_mb'], device['plugged_mb']
    if plugged > requested:
        state = VIRTIO_MEM_UNPLUGGING
    elif plugged == requested:
        state = VIRTIO_MEM_PLUGGED if requested else VIRTIO_MEM_IDLE
    else:
        state = VIRTIO_MEM_PLUGGING
        # One that has plugged nothing well after its start has no driver.
        if plugged == 0 and sizing.since_start(instance) is not None and (
                not sizing.virtio_mem_settling(instance)):
            state = VIRTIO_MEM_NOT_PLUGGING
    return {'state': state, 'requested_mb': requested, 'plugged_mb': plugged}


def migrated_since_boot(instance: objects.Instance) -> bool:
    migrated_at = sizing.recorded_time(instance, sizing.SYSMETA_MIGRATED_AT)
    if migrated_at is None:
        return False
    started_at = sizing.recorded_time(instance, sizing.SYSMETA_STARTED_AT)
    return started_at is None or migrated_at >= started_at


def _common_reason(instance: objects.Instance) -> str | None:
    """Why no dimension can be adjusted now, from nova-api's own view."""
    if instance.locked:
        return _('The server is locked.')
    if instance.task_state is not None:
        if instance.task_state == sizing.ADJUSTING_TASK_STATE:
            return _('An adjustment is in progress.')
        return _('The server is busy with another operation '
                 '(%s).') % instance.task_state
    if instance.vm_state == vm_states.PAUSED:
        return _('The server is paused: unpause it first.')
    if instance.vm_state not in ADJUSTABLE_STATES:
        return _('The server is %s: only running and stopped servers are '
                 'adjusted.') % instance.vm_state
    return None


def _range_reason(floor: int, maximum: int, unit: str) -> str | None:
    if floor < maximum:
        return None
    return _('Its flavor gives it no range to adjust in: %(floor)d to '
             '%(maximum)d %(unit)s.') % {'floor': floor, 'maximum': maximum,
                                         'unit': unit}


def _vcpus_reason(instance: objects.Instance, size: sizing.ElasticSize,
                  conflicts: dict, guest: dict | None,
                  hotplug: str) -> str | None:
    reason = (_common_reason(instance) or
              conflicts.get(compatibility.VCPUS) or
              _range_reason(size.floor_vcpus, size.max_vcpus, 'vCPUs'))
    if reason is not None:
        return reason
    if guest is not None and hotplug == HOTPLUG_NOT_POSSIBLE:
        return _('Its domain has no hot-pluggable vCPUs (machine type '
                 '%s): it was started without them; a hard reboot starts '
                 'it with them.') % (guest['machine_type'] or _('unknown'))
    return None


def _memory_reason(instance: objects.Instance, size: sizing.ElasticSize,
                   conflicts: dict, balloon: str,
                   virtio_mem: dict | None) -> str | None:
    reason = (_common_reason(instance) or
              conflicts.get(compatibility.MEMORY) or
              _range_reason(size.floor_memory_mb, size.max_memory_mb, 'MiB'))
    if reason is not None:
        return reason
    if virtio_mem is not None:
        # Its balloon only reports; the device moves its memory.
        if virtio_mem['state'] == VIRTIO_MEM_NOT_PLUGGING:
            return _('Its guest has plugged none of the %d MiB its '
                     'virtio-mem device was asked to add since it started: '
                     'it has no virtio_mem driver (Linux 5.8 or later), and '
                     'would not take up a new memory '
                     'size.') % virtio_mem['requested_mb']
        return None
    if balloon == BALLOON_NO_DEVICE:
        return _('Its domain has no memory balloon.')
    if balloon == BALLOON_SILENT:
        return _('Its balloon driver has sent no statistics since the guest '
                 'started: the guest has no balloon driver, and would not '
                 'take up a new memory size.')
    return None


def _warnings(guest: dict | None, balloon: str, agent: str,
              migrated: bool, virtio_mem: dict | None) -> list[str]:
    warnings = []
    if migrated:
        warnings.append(_('Live-migrated since it started: some guest '
                          'kernels cannot bring vCPUs hot-plugged after a '
                          'migration online.'))
    if guest is not None and guest['guest']['online_vcpus'] is not None and (
            guest['guest']['online_vcpus'] < guest['size']['vcpus']):
        warnings.append(_('The guest runs %(online)d of its %(vcpus)d vCPUs '
                          'online (a vCPU unplug it did not finish, or '
                          'vCPUs it took offline itself).') % {
            'online': guest['guest']['online_vcpus'],
            'vcpus': guest['size']['vcpus']})
    if agent == sizing.GUEST_AGENT_NOT_CONFIGURED:
        warnings.append(_('No guest agent (image property '
                          'hw_qemu_guest_agent): hot-plugged vCPUs come '
                          'online only if the guest onlines them itself, '
                          'and that cannot be checked.'))
    elif agent == sizing.GUEST_AGENT_NOT_ANSWERING:
        warnings.append(_('The guest agent does not answer: %s') % (
            guest['guest']['agent_error'] or _('no reason given')))
    if virtio_mem is not None:
        warnings.extend(_virtio_mem_warnings(balloon, virtio_mem))
    elif balloon == BALLOON_NO_STATISTICS:
        warnings.append(_('No balloon statistics (collection is off, '
                          '[libvirt] mem_stats_period_seconds = 0, or the '
                          'guest has only just started): whether it takes '
                          'up a new memory size shows only when it is '
                          'asked to.'))
    return warnings


def _virtio_mem_warnings(balloon: str, virtio_mem: dict) -> list[str]:
    warnings = []
    state = virtio_mem['state']
    figures = {'plugged': virtio_mem['plugged_mb'],
               'requested': virtio_mem['requested_mb']}
    if state == VIRTIO_MEM_PLUGGING:
        warnings.append(_('The guest has plugged %(plugged)d of the '
                          '%(requested)d MiB its virtio-mem device was asked '
                          'to add.') % figures)
    elif state == VIRTIO_MEM_UNPLUGGING:
        warnings.append(_('The guest holds %(plugged)d MiB through its '
                          'virtio-mem device, which was asked for '
                          '%(requested)d: blocks in use that it has not given '
                          'back yet. They stay counted in placement.') %
                        figures)
    if balloon in (BALLOON_NO_DEVICE, BALLOON_SILENT, BALLOON_NO_STATISTICS):
        warnings.append(_('Its memory is not shrunk while the guest sends no '
                          'balloon statistics: with virtio-mem they say how '
                          'much it uses, and unplugged blocks do not come '
                          'back.'))
    return warnings


def _utilisation(guest: dict | None) -> dict:
    if guest is None:
        return {'memory': None, 'vcpus': None,
                'reason': _('The guest was not read.')}
    reasons = []
    memory = None
    usable = guest['guest']['usable_memory_mb']
    current_mb = guest['size']['memory_mb']
    if usable is None:
        reasons.append(_('The guest sends no memory statistics.'))
    elif usable >= current_mb:
        # The balloon moved since the guest last sent them (they come
        # once a period): they describe the size it had before.
        reasons.append(_('The guest\'s memory statistics predate the '
                         'balloon\'s last move; they are renewed within '
                         'one statistics period.'))
    else:
        # What it holds less what its programs could still take: with
        # deflate-on-OOM the balloon's pages count as neither.
        memory = {'used_mb': max(current_mb - usable, 0),
                  'current_mb': current_mb}
    vcpus = None
    busy = guest['busy']
    if busy is None:
        reasons.append(_('vCPU use is averaged over %d seconds; the host '
                         'has no sample of this guest old enough '
                         'yet.') % CONF.xloud.utilisation_window_seconds)
    else:
        vcpus = {'busy': busy['vcpus'], 'current': guest['size']['vcpus'],
                 'window_seconds': busy['window_seconds']}
    return {'memory': memory, 'vcpus': vcpus,
            'reason': ' '.join(reasons) or None}


def _recommendation(size: sizing.ElasticSize, conflicts: dict,
                    usage: dict, virtio_mem: bool) -> dict:
    recommended = {'vcpus': None, 'memory_mb': None, 'vcpus_rule': None,
                   'memory_rule': None}
    memory = usage['memory']
    # A dimension the flavor or the guest keeps fixed gets none; one that
    # is only momentarily refused (locked, busy) does.
    fixed = {
        compatibility.VCPUS: (
            compatibility.VCPUS in conflicts or
            size.floor_vcpus >= size.max_vcpus),
        compatibility.MEMORY: (
            compatibility.MEMORY in conflicts or
            size.floor_memory_mb >= size.max_memory_mb),
    }
    if memory is not None and not fixed[compatibility.MEMORY]:
        headroom = CONF.xloud.recommend_memory_headroom_percent
        needed = memory['used_mb'] * 100 / (100 - headroom)
        figures = {
            'used': memory['used_mb'], 'current': memory['current_mb'],
            'headroom': headroom, 'step': MEMORY_STEP_MB,
            'floor': size.floor_memory_mb, 'maximum': size.max_memory_mb,
            'margin': sizing.VIRTIO_MEM_SHRINK_MARGIN_MB}
        if virtio_mem:
            # The least the compute host lets a virtio-mem shrink reach.
            needed = max(needed, memory['used_mb'] + figures['margin'])
            rule = _('Uses %(used)d of %(current)d MiB; %(headroom)d%% of it '
                     'kept free and at least %(margin)d MiB (virtio-mem), in '
                     'steps of %(step)d MiB, within %(floor)d-%(maximum)d '
                     'MiB: %(value)d MiB.')
        else:
            rule = _('Uses %(used)d of %(current)d MiB; %(headroom)d%% of it '
                     'kept free, in steps of %(step)d MiB, within '
                     '%(floor)d-%(maximum)d MiB: %(value)d MiB.')
        value = _clamp(math.ceil(needed / MEMORY_STEP_MB) * MEMORY_STEP_MB,
                       size.floor_memory_mb, size.max_memory_mb)
        recommended['memory_mb'] = value
        recommended['memory_rule'] = rule % {**figures, 'value': value}
    vcpus = usage['vcpus']
    if vcpus is not None and not fixed[compatibility.VCPUS]:
        spare = CONF.xloud.recommend_spare_vcpus
        step = size.vcpu_step
        wanted = math.ceil(vcpus['busy']) + spare
        value = _clamp(math.ceil(wanted / step) * step, size.floor_vcpus,
                       size.max_vcpus)
        recommended['vcpus'] = value
        recommended['vcpus_rule'] = _(
            '%(busy).2f vCPUs busy on average over the last %(window)d '
            'seconds, plus %(spare)d spare, within %(floor)d-%(maximum)d: '
            '%(value)d.') % {
                'busy': vcpus['busy'], 'window': vcpus['window_seconds'],
                'spare': spare, 'floor': size.floor_vcpus,
                'maximum': size.max_vcpus, 'value': value}
    return recommended


def _clamp(value: int, floor: int, maximum: int) -> int:
    return max(floor, min(value, maximum))
