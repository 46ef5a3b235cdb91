"""The autopilot's cycle on nova-compute (doc/autopilot.md).

Every ``[xloud_autopilot] interval`` the host samples each running guest
that opted in (``sizing.autosize``), asks ``nova_ext.autopilot`` what to
do with the host's guests together, and in ``on`` mode makes the changes
one by one through the endpoint's adjustment path. What it last decided
for each guest is kept in memory and answered with the guest's readiness
(``describe_guests``); every change it makes is an instance action of its
own kind with the reason in its event and change record.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from nova import context as nova_context
from nova import objects
from nova.compute import vm_states
from nova.i18n import _
from oslo_log import log as logging
from oslo_utils import timeutils

from nova_ext import autopilot, conf, placement, sizing
from nova_ext.exception import AdjustmentRefused
from nova_ext.virt import live

LOG = logging.getLogger(__name__)
CONF = conf.CONF

_ROOM_CLASSES = {placement.VCPU: autopilot.VCPUS,
                 placement.MEMORY_MB: autopilot.MEMORY}


@dataclasses.dataclass(frozen=True)
class GuestReport:
    """What the autopilot last made of one guest, as ``describe_guest``
    answers it."""

    mode: str
    dimensions: tuple[str, ...]
    decisions: tuple[autopilot.Decision, ...]
    as_of: str

    def to_dict(self) -> dict:
        return {'mode': self.mode, 'dimensions': list(self.dimensions),
                'decisions': [dataclasses.asdict(decision)
                              for decision in self.decisions],
                'as_of': self.as_of}


class AutopilotRunner:
    """One per nova-compute: the guests' histories and the cycle."""

    def __init__(self, endpoint, clock=time.monotonic) -> None:
        self.endpoint = endpoint
        self._clock = clock
        self._lock = threading.Lock()
        self._histories: dict[str, autopilot.GuestHistory] = {}
        # The previous CPU time and run-queue delay of each guest: (at,
        # ns, ns or None).
        self._cpu: dict[str, tuple[float, int, int | None]] = {}
        self._reports: dict[str, GuestReport] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def changed(self, instance_uuid: str, before: live.LiveSize,
                after: live.LiveSize) -> None:
        """A guest's size changed (by the autopilot or anyone else)."""
        at = self._clock()
        with self._lock:
            history = self._histories.get(instance_uuid)
            if history is None:
                return
            for dimension, was, now in (
                    (autopilot.VCPUS, before.vcpus, after.vcpus),
                    (autopilot.MEMORY, before.memory_mb, after.memory_mb)):
                if now != was:
                    history.changed(dimension, autopilot.GROW if now > was
                                    else autopilot.SHRINK, at)

    def report(self, instance_uuid: str) -> dict | None:
        """What the autopilot last decided for the guest, or None."""
        with self._lock:
            found = self._reports.get(instance_uuid)
        return None if found is None else found.to_dict()

    def start(self) -> None:
        """Run the cycle every interval in a thread of its own, until
        ``stop``; a cycle that fails is logged and the next one runs."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop,
                                        name='xloud-autopilot', daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(CONF.xloud_autopilot.interval):
            try:
                self.run_once()
            except Exception:
                LOG.exception('The autopilot\'s cycle failed')

    def run_once(self, context: nova_context.RequestContext | None = None
                 ) -> list[tuple[str, autopilot.Decision]]:
        """One cycle: sample, decide, and (mode ``on``) adjust; the
        decisions as made, in the order they were."""
        try:
            params = autopilot.Params.from_conf(CONF)
        except ValueError as e:
            LOG.error('The autopilot does not run: %s', e)
            return []
        if params.mode == autopilot.MODE_OFF:
            with self._lock:
                self._histories.clear()
                self._cpu.clear()
                self._reports.clear()
            return []
        context = context or nova_context.get_admin_context()
        host = self.endpoint.host
        # pci_requests: the devices that keep a dimension fixed, loaded
        # with the list rather than once per guest.
        instances = objects.InstanceList.get_by_host(
            context, host, expected_attrs=['flavor', 'system_metadata',
                                           'pci_requests'])
        guests, settings, by_uuid = [], {}, {}
        now = self._clock()
        for instance in instances:
            setting = sizing.autosize(instance, params.mode)
            if setting.mode == autopilot.MODE_OFF or (
                    instance.vm_state != vm_states.ACTIVE):
                continue
            guest = self._sample(context, instance, setting, params, now)
            if guest is not None:
                guests.append(guest)
                settings[instance.uuid] = setting
                by_uuid[instance.uuid] = instance
        with self._lock:
            for gone in set(self._histories) - set(settings):
                self._histories.pop(gone, None)
                self._cpu.pop(gone, None)
                self._reports.pop(gone, None)
        if not guests:
            return []
        total_mb, free_mb = self.endpoint.driver.host_memory_mb()
        room = self._room(context)
        planned = autopilot.plan_host(
            guests, params, now, host_free_memory_mb=min(free_mb, total_mb),
            host_memory_mb=total_mb, room=room)
        made = []
        by_guest: dict[str, list[autopilot.Decision]] = {
            uuid: [] for uuid in settings}
        for uuid, decision in planned:
            on = settings[uuid].mode == autopilot.MODE_ON
            if decision.action in autopilot.DIRECTIONS and on:
                decision = self._make(by_uuid[uuid], decision)
            made.append((uuid, decision))
            by_guest[uuid].append(decision)
            # Only what changes a guest is worth a line each cycle: the
            # rest is in the API's answer.
            LOG.log(logging.INFO if on and decision.action in
                    autopilot.DIRECTIONS else logging.DEBUG,
                    'Autopilot (%s): %s %s', settings[uuid].mode,
                    decision.action, decision.reason, instance_uuid=uuid)
        as_of = timeutils.utcnow().isoformat()
        reports = {uuid: GuestReport(mode=settings[uuid].mode,
                                     dimensions=settings[uuid].dimensions,
                                     decisions=tuple(decisions),
                                     as_of=as_of)
                   for uuid, decisions in by_guest.items()}
        with self._lock:
            self._reports.update(reports)
        return made

    def _sample(self, context, instance: objects.Instance,
                setting: sizing.Autosize, params: autopilot.Params,
                now: float) -> autopilot.Guest | None:
        domain = self.endpoint.driver.elastic_domain_by_uuid(instance.uuid)
        if domain is None or not domain.isActive() or live.is_paused(domain):
            return None
        try:
            pressure = live.read_pressure(
                domain, self.endpoint.memory_changed_at(instance),
                online_vcpus=autopilot.VCPUS in setting.dimensions)
        except Exception as e:
            # Gone or stopping meanwhile: the next cycle has it.
            LOG.debug('No autopilot sample: %s', e, instance=instance)
            return None
        with self._lock:
            previous = self._cpu.get(instance.uuid)
            self._cpu[instance.uuid] = (now, pressure.cpu_time_ns,
                                        pressure.delay_ns)
            busy = steal = None
            if previous is not None and now > previous[0] and (
                    pressure.cpu_time_ns >= previous[1]):
                elapsed_ns = (now - previous[0]) * 1e9
                busy = (pressure.cpu_time_ns - previous[1]) / elapsed_ns
                if None not in (pressure.delay_ns, previous[2]) and (
                        pressure.delay_ns >= previous[2]):
                    steal = (pressure.delay_ns - previous[2]) / elapsed_ns
            history = self._histories.get(instance.uuid)
            if history is None:
                history = autopilot.GuestHistory.for_params(params)
                self._histories[instance.uuid] = history
            history.add(autopilot.Sample(
                at=now, vcpus=pressure.size.vcpus,
                memory_mb=pressure.size.memory_mb,
                usable_mb=pressure.usable_mb,
                major_faults=pressure.major_faults,
                swap_in_kib=pressure.swap_in_kib,
                swap_out_kib=pressure.swap_out_kib, busy_vcpus=busy,
                online_vcpus=pressure.online_vcpus, steal_vcpus=steal))
        size = sizing.ElasticSize.from_instance(instance, devices=True)
        if instance.task_state is None and (
                pressure.size.vcpus, pressure.size.memory_mb) != (
                size.live_vcpus, size.live_memory_mb):
            self._settle(context, instance, pressure.size)
            size = sizing.ElasticSize.from_instance(instance, devices=True)
        return autopilot.Guest(uuid=instance.uuid, history=history,
                               bounds=autopilot.Bounds.of(size),
                               dimensions=setting.dimensions)

    def _settle(self, context, instance: objects.Instance,
                observed: live.LiveSize) -> None:
        # The guest moved by itself (its balloon deflated on OOM) or the
        # record fell behind: the domain wins, as in the audit, so that
        # placement never counts less than the guest holds.
        report = self.endpoint.heal(context, instance)
        for change in report['changes']:
            LOG.warning('The guest runs at %d vCPUs / %d MiB, not the '
                        'recorded size: %s', observed.vcpus,
                        observed.memory_mb, change, instance=instance)
        for error in report['errors']:
            LOG.warning('The guest runs at %d vCPUs / %d MiB, not the '
                        'recorded size, and could not be settled: %s',
                        observed.vcpus, observed.memory_mb, error,
                        instance=instance)

    def _room(self, context) -> dict[str, int] | None:
        try:
            free = placement.free_room(context,
                                       self.endpoint.driver.node_provider())
        except Exception as e:
            # Without placement's figures no grow is made: each adjustment
            # would claim in placement anyway, and fail the same way.
            LOG.warning('The autopilot could not read placement: %s', e)
            return {autopilot.VCPUS: 0, autopilot.MEMORY: 0}
        return {_ROOM_CLASSES[resource_class]: amount
                for resource_class, amount in free.items()}

    def _make(self, instance: objects.Instance,
              decision: autopilot.Decision) -> autopilot.Decision:
        """Adjust as ``decision`` says; the decision as it turned out (a
        change that could not be made is skipped, with why)."""
        context = nova_context.get_admin_context()
        # The action is the instance's project's, made by no user.
        context.project_id = instance.project_id
        vcpus = decision.target if decision.dimension == autopilot.VCPUS \
            else None
        memory_mb = decision.target if (
            decision.dimension == autopilot.MEMORY) else None
        try:
            status = self.endpoint.adjust_automatically(
                context, instance, vcpus, memory_mb, decision.reason)
        except AdjustmentRefused as e:
            return _skipped(decision, e.format_message())
        except Exception as e:
            LOG.exception('An automatic adjustment failed',
                          instance=instance)
            return _skipped(decision, _('it failed: %s') % e)
        if status != sizing.STATUS_SUCCESS:
            error = (instance.system_metadata or {}).get(
                sizing.SYSMETA_ERROR) or status
            return _skipped(decision, _('the adjustment ended %(status)s: '
                                        '%(error)s') % {'status': status,
                                                        'error': error})
        return decision


def _skipped(decision: autopilot.Decision, why: str) -> autopilot.Decision:
    return dataclasses.replace(
        decision, action=autopilot.SKIPPED,
        reason=_('%(reason)s; skipped: %(why)s.') % {
            'reason': decision.reason.rstrip('.'), 'why': why.rstrip('.')})
