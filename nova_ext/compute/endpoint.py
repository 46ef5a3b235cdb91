"""The elastic sizing RPC endpoint, served by nova-compute.

``XloudLibvirtDriver`` adds it to the compute manager's
``additional_endpoints``, so it answers on Nova's ``compute`` topic under
the ``xloud`` namespace (``nova_ext.rpcapi`` is its client).

An adjustment arrives as ``start_adjust`` with the instance already in
``sizing.ADJUSTING_TASK_STATE`` (set by nova-api, so Nova refuses its own
operations meanwhile). It is taken at once and run in the background under
the instance's lock (the lock Nova's own instance operations take on the
compute), reported as the ``compute_xloud_adjust`` event of the instance
action the API started. It starts from what libvirt reports for the
domain, and records only what libvirt reports afterwards. Placement grows
before the guest does, so a host without room refuses the change before
libvirt sees it, and settles on the confirmed size afterwards.
"""

from __future__ import annotations

import datetime
import threading
import time

import oslo_messaging as messaging
from nova import context as nova_context
from nova import exception, objects, thread_pool_factory, utils
from nova.compute import utils as compute_utils
from nova.compute import vm_states
from nova.i18n import _
from oslo_log import log as logging
from oslo_utils import timeutils

from nova_ext import conf, placement, quota, rpcapi, sizing
from nova_ext.compute import autopilot, utilisation
from nova_ext.exception import AdjustmentRefused
from nova_ext.virt import live

LOG = logging.getLogger(__name__)
CONF = conf.CONF

EVENT = sizing.EVENT


class AdjustmentFailed(exception.NovaException):
    """The reason becomes the event's details, as a fault message does.

    ``applied`` says what libvirt confirmed before the failure (as
    ``_describe_change`` does, '' for nothing), ``persisted`` whether that
    was recorded as the boot size, ``cause`` the failure itself, for the
    instance's change record, ``record`` the size to record, and
    ``status`` the adjustment's outcome: STATUS_PARTIAL when libvirt
    applied the size and the guest does not run with all of it.
    """

    msg_fmt = _('%(reason)s')

    def __init__(self, *, reason: str, applied: str = '',
                 persisted: bool = False, cause: str | None = None,
                 record: sizing.RecordUpdate | None = None,
                 status: str = sizing.STATUS_ERROR) -> None:
        super().__init__(reason=reason)
        self.applied = applied
        self.persisted = persisted
        self.cause = cause or reason
        self.record = record
        self.status = status


class AdjustmentInterrupted(exception.NovaException):
    """An adjustment no nova-compute is running any more."""

    msg_fmt = _('%(reason)s')


_EXPECTED_FAILURES = (AdjustmentFailed, placement.InsufficientCapacity,
                      placement.AllocationUpdateFailed)


def restart_message(host: str) -> str:
    return _('nova-compute on %s restarted while the adjustment was in '
             'progress; the size was re-read from the hypervisor') % host


class ElasticSizingEndpoint:

    target = messaging.Target(namespace=rpcapi.NAMESPACE,
                              version=rpcapi.VERSION)

    def __init__(self, driver, host: str) -> None:
        # ``driver`` is the XloudLibvirtDriver that serves this endpoint.
        self.driver = driver
        self.host = host
        # Instances with an adjustment taken by this process and not yet
        # ended: anything else found adjusting was interrupted.
        self._running: set[str] = set()
        self._running_lock = threading.Lock()
        self.cpu_samples = utilisation.CpuTimeSamples()
        # When this process last changed each guest's memory (seconds
        # since the epoch, as QEMU stamps the balloon's statistics).
        self._memory_changed_at: dict[str, float] = {}
        self.autopilot = autopilot.AutopilotRunner(self)

    def memory_changed_at(self, instance: objects.Instance) -> float:
        """When the guest's memory last changed, as far as is known: its
        start, and this process's last change of it; without one since
        nova-compute started, the record's last update (any size change,
        which is more than needed). 0.0 when nothing is known."""
        keys = [sizing.SYSMETA_STARTED_AT]
        known = [self._memory_changed_at.get(instance.uuid, 0.0)]
        if instance.uuid not in self._memory_changed_at:
            keys.append(sizing.SYSMETA_UPDATED_AT)
        for key in keys:
            recorded = sizing.recorded_time(instance, key)
            if recorded is not None:
                known.append(timeutils.normalize_time(recorded).replace(
                    tzinfo=datetime.UTC).timestamp())
        return max(known)

    def _memory_changed(self, instance: objects.Instance) -> None:
        self._memory_changed_at[instance.uuid] = time.time()

    @messaging.expected_exceptions(AdjustmentRefused)
    def start_adjust(self, context: nova_context.RequestContext,
                     instance: objects.Instance, vcpus: int | None,
                     memory_mb: int | None, persist: bool,
                     not_after: str) -> None:
        """Take an adjustment and run it; the outcome is the action's event.

        Answers as soon as the request is recorded as in progress. A
        request nova-api has given up on (past ``not_after``, or the
        instance no longer waiting for it) is refused and changes nothing.
        """
        if timeutils.utcnow() > timeutils.normalize_time(
                timeutils.parse_isotime(not_after)):
            LOG.warning('Dropping adjustment %s: it arrived after nova-api '
                        'gave up waiting for it (%s)', context.request_id,
                        not_after, instance=instance)
            raise AdjustmentRefused(reason=_(
                'The request reached the compute host after nova-api gave '
                'up on it'))
        instance.refresh()
        if instance.host != self.host:
            raise AdjustmentRefused(reason=_(
                'The instance is on host %(actual)s, not %(host)s') % {
                'actual': instance.host, 'host': self.host})
        if not self._waits_for(context, instance, context.request_id):
            raise AdjustmentRefused(reason=_(
                'The instance is not waiting for this adjustment '
                '(task_state %s)') % instance.task_state)
        try:
            sizing.save_record(
                instance, sizing.RecordUpdate().status(
                    sizing.STATUS_ADJUSTING, context.request_id),
                expected_task_state=[sizing.ADJUSTING_TASK_STATE])
        except exception.UnexpectedTaskStateError as e:
            raise AdjustmentRefused(reason=e.format_message())
        with self._running_lock:
            self._running.add(instance.uuid)
        thread_pool_factory.spawn(self._run_adjustment, context, instance,
                                  vcpus, memory_mb, persist)

    def adjust_automatically(self, context: nova_context.RequestContext,
                             instance: objects.Instance, vcpus: int | None,
                             memory_mb: int | None, reason: str) -> str:
        """Make one autopilot change, through the same path as a manual one.

        The project's quota and placement are checked and the grow claimed
        first (``quota.claim_grow``), as nova-api does; then the instance
        takes the adjustment's task state (so Nova refuses its own
        operations meanwhile, and this one is given up if one of them
        started), its own instance action (``sizing.AUTO_ACTION``, the
        event named after ``reason``) and runs under the instance's lock.
        Returns the adjustment's status; raises ``AdjustmentRefused`` with
        why when it was not started, having changed nothing.
        """
        instance.refresh()
        if instance.host != self.host or (
                instance.vm_state != vm_states.ACTIVE):
            raise AdjustmentRefused(reason=_(
                'the instance is no longer running here'))
        if instance.task_state is not None:
            raise AdjustmentRefused(reason=_(
                'the instance is busy (task_state %s)') %
                instance.task_state)
        if instance.locked:
            raise AdjustmentRefused(reason=_('the instance is locked'))
        try:
            claimed_from = quota.claim_grow(context, instance, vcpus,
                                            memory_mb,
                                            self.driver.node_provider())
        except exception.TooManyInstances as e:
            raise AdjustmentRefused(reason=_('over the project\'s quota: '
                                             '%s') % e.format_message())
        except (placement.InsufficientCapacity,
                placement.AllocationUpdateFailed) as e:
            raise AdjustmentRefused(reason=_('placement: %s') %
                                    e.format_message())
        instance.task_state = sizing.ADJUSTING_TASK_STATE
        try:
            instance.save(expected_task_state=[None],
                          expected_vm_state=[vm_states.ACTIVE])
        except (exception.UnexpectedTaskStateError,
                exception.InstanceUpdateConflict) as e:
            quota.release_grow(context, instance, claimed_from,
                               self.driver.node_provider())
            raise AdjustmentRefused(reason=_(
                'a Nova operation started meanwhile: %s') %
                e.format_message())
        objects.InstanceAction.action_start(
            context, instance.uuid, sizing.AUTO_ACTION, want_result=False)
        sizing.save_record(
            instance, sizing.RecordUpdate().status(
                sizing.STATUS_ADJUSTING, context.request_id),
            expected_task_state=[sizing.ADJUSTING_TASK_STATE])
        with self._running_lock:
            self._running.add(instance.uuid)
        try:
            self._locked_adjustment(context, instance, vcpus, memory_mb,
                                    True, event=sizing.auto_event(reason),
                                    reason=reason)
        finally:
            with self._running_lock:
                self._running.discard(instance.uuid)
        instance.refresh()
        return (instance.system_metadata or {}).get(sizing.SYSMETA_STATUS,
                                                    sizing.STATUS_ERROR)

    @messaging.expected_exceptions(exception.InstanceNotRunning,
                                   exception.InstanceNotFound)
    def get_live_size(self, context: nova_context.RequestContext,
                      instance: objects.Instance) -> dict:
        domain = self.driver.elastic_domain(instance)
        if not domain.isActive():
            raise exception.InstanceNotRunning(instance_id=instance.uuid)
        size = live.read_size(domain)
        return {'vcpus': size.vcpus, 'memory_mb': size.memory_mb}

    def describe_domains(self, context: nova_context.RequestContext,
                         instance_uuids: list[str]) -> dict:
        """What this hypervisor holds for each instance, for the audit."""
        return {uuid: self.describe_domain(uuid) for uuid in instance_uuids}

    def describe_domain(self, instance_uuid: str) -> dict:
        """``{'state', 'live', 'config', 'maximum', 'adjusting',
        'virtio_mem'}``.

        ``state`` is running, paused, stopped or missing; ``live`` the size
        the guest runs at (running or paused), ``config`` and ``maximum``
        its persistent definition's boot and maximum size, each
        ``{'vcpus', 'memory_mb'}`` or None; ``adjusting`` whether an
        adjustment runs in this nova-compute now; ``virtio_mem`` the
        running domain's virtio-mem figures
        (``live.virtio_mem_figures``), None without one.
        """
        with self._running_lock:
            adjusting = instance_uuid in self._running
        found = {'state': 'missing', 'live': None, 'config': None,
                 'maximum': None, 'adjusting': adjusting, 'virtio_mem': None}
        domain = self.driver.elastic_domain_by_uuid(instance_uuid)
        if domain is None:
            return found
        definition = live.read_definition(domain)
        found['config'] = _as_dict(definition.current)
        found['maximum'] = _as_dict(definition.maximum)
        if domain.isActive():
            found['state'] = 'paused' if live.is_paused(domain) else (
                'running')
            found['live'] = _as_dict(live.read_size(domain))
            found['virtio_mem'] = live.read_virtio_mem(domain)
        else:
            found['state'] = 'stopped'
        return found

    def describe_guests(self, context: nova_context.RequestContext,
                        instance_uuids: list[str]) -> dict:
        """What each guest shows of its readiness for a new size.

        ``{uuid: GUEST}``: for a running domain GUEST is
        ``live.GuestState.to_dict()`` with ``busy`` (``{'vcpus',
        'window_seconds'}`` or None while not yet measured) and ``as_of``;
        otherwise ``{'error': why}``. Read without the instance's lock:
        it changes nothing, and the API shows an adjustment in flight as
        such.
        """
        return {uuid: self.describe_guest(uuid) for uuid in instance_uuids}

    def describe_guest(self, instance_uuid: str) -> dict:
        domain = self.driver.elastic_domain_by_uuid(instance_uuid)
        if domain is None:
            return {'error': _('The domain is not on host %s.') % self.host}
        if not domain.isActive():
            return {'error': _('The guest is not running.')}
        if live.is_paused(domain):
            # Its size holds; its balloon and agent answer once it runs.
            return {'error': _('The guest is paused.'),
                    'size': _as_dict(live.read_size(domain))}
        try:
            state = live.read_guest_state(domain)
        except Exception as e:
            # One guest's failure does not hide the others'.
            LOG.warning('Could not read the guest\'s readiness: %s', e,
                        instance_uuid=instance_uuid)
            return {'error': _('libvirt could not describe the guest: '
                               '%s') % e}
        self.cpu_samples.add(instance_uuid, state.cpu_time_ns)
        busy = self.cpu_samples.busy(instance_uuid)
        return {**state.to_dict(),
                'busy': None if busy is None else {
                    'vcpus': busy.vcpus,
                    'window_seconds': busy.window_seconds},
                'autopilot': {
                    'host_mode': CONF.xloud_autopilot.mode,
                    'report': self.autopilot.report(instance_uuid)},
                'as_of': utils.isotime()}

    def sample_cpu_time(self) -> None:
        """Take a CPU time sample of every running domain here."""
        running = {}
        for domain in self.driver.running_domains():
            try:
                running[domain.UUIDString()] = int(domain.info()[4])
            except Exception as e:
                # Gone meanwhile, or stopping: the next sample has it.
                LOG.debug('No CPU time sample of a domain: %s', e)
        for uuid, cpu_time_ns in running.items():
            self.cpu_samples.add(uuid, cpu_time_ns)
        self.cpu_samples.keep_only(running)

    def heal(self, context: nova_context.RequestContext,
             instance: objects.Instance) -> dict:
        """Settle record and placement from the domain; the domain wins.

        Returns ``{'changes': [...], 'errors': [...]}``, each an operator's
        sentence.
        """
        report: dict[str, list[str]] = {'changes': [], 'errors': []}

        @utils.synchronized(instance.uuid)
        def locked_heal() -> None:
            instance.refresh()
            with self._running_lock:
                if instance.uuid in self._running:
                    report['errors'].append(_(
                        'An adjustment is running; audit again once it '
                        'has ended.'))
                    return
            if self.interrupted_request(context, instance):
                report['changes'].append(self.end_interrupted(
                    context, instance, _(
                        'No nova-compute on %s is running the adjustment '
                        'any more; the size was re-read from the '
                        'hypervisor') % self.host))
            self.settle_from_domain(context, instance, report)

        locked_heal()
        return report

    def settle_from_domain(self, context: nova_context.RequestContext,
                           instance: objects.Instance,
                           report: dict[str, list[str]]) -> None:
        """Record what the domain reports and set placement to it.

        The caller holds the instance's lock and has just read it.
        """
        if instance.task_state is not None:
            report['errors'].append(_(
                'The instance is busy (task_state %s); audit again once it '
                'has ended.') % instance.task_state)
            return
        domain = self.driver.elastic_domain_by_uuid(instance.uuid)
        if domain is None:
            report['errors'].append(_(
                'The hypervisor of %s has no domain for the instance.') %
                self.host)
            return
        size = sizing.ElasticSize.from_instance(instance)
        if domain.isActive() and not live.is_paused(domain) and (
                not sizing.virtio_mem_settling(instance)):
            settled = live.settle_virtio_mem(domain)
            if settled is not None:
                self._memory_changed(instance)
                report['changes'].append(_(
                    'Asked the virtio-mem device for what the guest holds, '
                    '%(holds)d MiB (it was asked for %(asked)d MiB, which '
                    'the guest did not reach).') % {
                    'holds': settled[1], 'asked': settled[0]})
        boot = live.read_definition(domain).current
        running = live.read_size(domain) if domain.isActive() else None
        observed = running or boot
        recorded = ((size.live_vcpus, size.live_memory_mb),
                    (size.boot_vcpus, size.boot_memory_mb))
        found = ((observed.vcpus, observed.memory_mb),
                 (boot.vcpus, boot.memory_mb))
        if recorded != found or not _has_record(instance):
            sizing.save_record(
                instance, sizing.RecordUpdate().size(
                    instance, vcpus=observed.vcpus,
                    memory_mb=observed.memory_mb, boot_vcpus=boot.vcpus,
                    boot_memory_mb=boot.memory_mb),
                expected_task_state=[None])
            report['changes'].append(_(
                'Recorded the size the domain reports: live %(lv)d vCPUs / '
                '%(lm)d MiB, boot %(bv)d vCPUs / %(bm)d MiB (the record said '
                'live %(rlv)d / %(rlm)d, boot %(rbv)d / %(rbm)d).') % {
                'lv': observed.vcpus, 'lm': observed.memory_mb,
                'bv': boot.vcpus, 'bm': boot.memory_mb,
                'rlv': recorded[0][0], 'rlm': recorded[0][1],
                'rbv': recorded[1][0], 'rbm': recorded[1][1]})
        if running is None:
            # A stopped guest uses nothing; its next start claims what it
            # starts with before it starts.
            return
        try:
            before = placement.allocated(
                context, instance, self.driver.node_provider())
            placement.set_allocation(context, instance, running.vcpus,
                                     running.memory_mb,
                                     self.driver.node_provider())
        except (placement.InsufficientCapacity,
                placement.AllocationUpdateFailed) as e:
            report['errors'].append(e.format_message())
            return
        if before != (running.vcpus, running.memory_mb):
            was = (_('nothing') if before is None else
                   _('%(vcpus)d VCPU / %(mem)d MEMORY_MB') % {
                       'vcpus': before[0], 'mem': before[1]})
            report['changes'].append(_(
                'Set the placement allocation to %(vcpus)d VCPU / %(mem)d '
                'MEMORY_MB (it was %(was)s).') % {
                'vcpus': running.vcpus, 'mem': running.memory_mb,
                'was': was})

    def interrupted_request(self, context: nova_context.RequestContext,
                            instance: objects.Instance) -> str | None:
        """The request id of an adjustment found in progress that this
        process does not run, or None."""
        sysmeta = instance.system_metadata or {}
        with self._running_lock:
            if instance.uuid in self._running:
                return None
        if sysmeta.get(sizing.SYSMETA_STATUS) == sizing.STATUS_ADJUSTING:
            return sysmeta.get(sizing.SYSMETA_REQUEST_ID) or None
        if instance.task_state == sizing.ADJUSTING_TASK_STATE:
            action = _newest_action(context, instance)
            if action is not None and action.action in sizing.ADJUST_ACTIONS:
                return action.request_id
        return None

    def end_interrupted(self, context: nova_context.RequestContext,
                        instance: objects.Instance, reason: str) -> str:
        """End an adjustment nobody runs: its event, status, task state."""
        request_id = self.interrupted_request(context, instance)
        request_context = context.elevated()
        request_context.request_id = request_id
        if request_id is None:
            LOG.warning('An adjustment without a request id was found in '
                        'progress', instance=instance)
        else:
            _finish_event_with_failure(request_context, instance, self.host,
                                       reason)
        update = sizing.RecordUpdate().status(
            sizing.STATUS_ERROR, request_id, reason)
        if request_id is not None:
            update.change(request_id, _('failed: %s') % reason)
        if instance.task_state == sizing.ADJUSTING_TASK_STATE:
            sizing.save_record(instance, update, end_task=True)
        else:
            sizing.save_record(instance, update)
        LOG.warning('Ended interrupted adjustment %s: %s', request_id,
                    reason, instance=instance)
        return _('Ended the interrupted adjustment %(request)s: '
                 '%(reason)s') % {'request': request_id, 'reason': reason}

    def _waits_for(self, context: nova_context.RequestContext,
                   instance: objects.Instance, request_id: str) -> bool:
        if instance.task_state != sizing.ADJUSTING_TASK_STATE:
            return False
        action = _newest_action(context, instance)
        return (action is not None and action.action == sizing.ACTION and
                action.request_id == request_id)

    def _run_adjustment(self, context: nova_context.RequestContext,
                        instance: objects.Instance, vcpus: int | None,
                        memory_mb: int | None, persist: bool) -> None:
        try:
            self._locked_adjustment(context, instance, vcpus, memory_mb,
                                    persist)
        except Exception:
            # Nothing waits for this task: its failure must be seen here.
            LOG.exception('Elastic size adjustment %s failed',
                          context.request_id, instance=instance)
        finally:
            with self._running_lock:
                self._running.discard(instance.uuid)

    def _locked_adjustment(self, context: nova_context.RequestContext,
                           instance: objects.Instance, vcpus: int | None,
                           memory_mb: int | None, persist: bool, *,
                           event: str = EVENT,
                           reason: str | None = None) -> None:
        """Run the adjustment, reported as ``event`` of its action;
        ``reason`` (an automatic one's) ends its change record."""

        @utils.synchronized(instance.uuid)
        def locked_adjust() -> None:
            instance.refresh()
            sysmeta = instance.system_metadata or {}
            if (instance.task_state != sizing.ADJUSTING_TASK_STATE or
                    sysmeta.get(sizing.SYSMETA_REQUEST_ID) !=
                    context.request_id):
                LOG.warning('Adjustment %s was ended before it ran '
                            '(task_state %s)', context.request_id,
                            instance.task_state, instance=instance)
                return
            # The record (and the end of the task state) is saved before
            # the event finishes: whoever sees the event finished reads
            # the outcome, and may start the next operation at once.
            try:
                with compute_utils.EventReporter(
                        context, event, self.host, instance.uuid):
                    try:
                        update = self._adjust(context, instance, vcpus,
                                              memory_mb, persist, reason)
                    except Exception as e:
                        self._record_failure(context, instance, e)
                        raise
                    sizing.save_record(instance, update, end_task=True)
            except _EXPECTED_FAILURES as e:
                LOG.error('Elastic size adjustment failed: %s',
                          e.format_message(), instance=instance)

        locked_adjust()

    @staticmethod
    def _record_failure(context: nova_context.RequestContext,
                        instance: objects.Instance, error: Exception) -> None:
        """The instance's record says the last adjustment failed, keeping
        any size libvirt did confirm before the failure."""
        expected = isinstance(error, _EXPECTED_FAILURES)
        message = (error.format_message() if expected
                   else f'{type(error).__name__}: {error}')
        update = (error.record if isinstance(error, AdjustmentFailed)
                  and error.record else sizing.RecordUpdate())
        update.status(error.status if isinstance(error, AdjustmentFailed)
                      else sizing.STATUS_ERROR, context.request_id, message)
        update.change(context.request_id, _describe_failure(error, message))
        sizing.save_record(instance, update, end_task=True)

    def _adjust(self, context: nova_context.RequestContext,
                instance: objects.Instance, vcpus: int | None,
                memory_mb: int | None, persist: bool,
                reason: str | None = None) -> sizing.RecordUpdate:
        """Apply the change; the record of its success, or raise with the
        record of what did change as the exception's ``record``."""
        size = sizing.ElasticSize.from_instance(instance, devices=True)
        domain = self.driver.elastic_domain(instance)
        if not domain.isActive():
            return self._adjust_stopped(context, instance, size, domain,
                                        vcpus, memory_mb, persist)
        start = live.read_size(domain)
        if (start.vcpus, start.memory_mb) != (size.live_vcpus,
                                              size.live_memory_mb):
            LOG.warning('The record said %d vCPUs / %d MiB, the domain runs '
                        'at %d / %d: starting from the domain',
                        size.live_vcpus, size.live_memory_mb, start.vcpus,
                        start.memory_mb, instance=instance)
        target_vcpus = start.vcpus if vcpus is None else vcpus
        target_memory = start.memory_mb if memory_mb is None else memory_mb
        _check_bounds(size, target_vcpus, target_memory)
        if live.is_paused(domain) and (target_vcpus, target_memory) != (
                start.vcpus, start.memory_mb):
            raise AdjustmentFailed(reason=_(
                'The instance is paused: it cannot take a new size until it '
                'runs again'))

        # Grow first: a host without room refuses before the guest grows.
        placement.claim_at_least(
            context, instance, max(target_vcpus, start.vcpus),
            max(target_memory, start.memory_mb))
        failure = None
        balloon_answered = None
        # What the guest agent was asked to do, and what it failed to.
        guest_steps = GuestSteps()
        try:
            offlined = set()
            if target_vcpus < start.vcpus:
                offlined = guest_steps.run(
                    _('the guest agent offlined vCPUs %s'),
                    live.offline_before_unplug, domain,
                    target_vcpus)
            if target_vcpus != start.vcpus:
                try:
                    live.apply_vcpus(domain, target_vcpus, persist=False)
                except live.LiveSizeError:
                    if offlined:
                        # The guest keeps what libvirt could not take.
                        guest_steps.run(
                            _('the guest agent onlined vCPUs %s again'),
                            live.online_again, domain, offlined)
                    raise
            if target_vcpus > start.vcpus:
                guest_steps.run(_('the guest agent onlined vCPUs %s'),
                                live.online_plugged_vcpus, domain,
                                CONF.xloud.guest_vcpu_online_timeout)
            if target_memory != start.memory_mb:
                try:
                    live.apply_memory(domain, target_memory, persist=False,
                                      confirm_timeout=(
                                          CONF.xloud.memory_confirm_timeout),
                                      stats_after=self.memory_changed_at(
                                          instance))
                except live.NotConfirmed:
                    balloon_answered = False
                    self._memory_changed(instance)
                    raise
                self._memory_changed(instance)
                balloon_answered = True
        except live.LiveSizeError as e:
            failure = e
        # Whatever part of the request went through, what the domain
        # reports now is what the guest holds.
        final = live.read_size(domain)
        self.autopilot.changed(instance.uuid, start, final)
        if persist and failure is None:
            try:
                live.persist_size(domain, final.vcpus, final.memory_mb)
            except live.LiveSizeError as e:
                failure = e
        boot = live.read_definition(domain).current
        changed = _describe_change(start, final)
        update = sizing.RecordUpdate().size(
            instance, vcpus=final.vcpus, memory_mb=final.memory_mb,
            boot_vcpus=boot.vcpus, boot_memory_mb=boot.memory_mb)
        if balloon_answered is not None:
            update.balloon(balloon_answered, target_memory)
        guest = live.read_guest(domain)
        update.guest(_GUEST_AGENT[guest.agent], guest.online_vcpus,
                     guest.available_memory_mb, guest.usable_memory_mb)
        # A memory-only change is not made partial by vCPUs the guest had
        # offline before it (readiness warns of those).
        shortfall = None
        if vcpus is not None or final.vcpus != start.vcpus:
            shortfall = _guest_shortfall(final, guest,
                                         grew=final.vcpus > start.vcpus)
        placement_error = None
        try:
            placement.set_allocation(context, instance, final.vcpus,
                                     final.memory_mb)
        except (placement.InsufficientCapacity,
                placement.AllocationUpdateFailed) as e:
            placement_error = e.format_message()

        persisted = persist and failure is None
        if failure is not None:
            cause = guest_steps.describe(str(failure))
            reason = cause
            if changed:
                reason = _('%(reason)s (applied: %(changed)s)') % {
                    'reason': reason, 'changed': changed}
            raise AdjustmentFailed(reason=reason, applied=changed,
                                   cause=cause, record=update)
        if placement_error:
            raise AdjustmentFailed(
                reason=_('%(changed)s applied, but placement was not '
                         'updated: %(error)s') % {
                    'changed': changed or _('no change'),
                    'error': placement_error},
                applied=changed, persisted=persisted,
                cause=_('placement was not updated: %s') % placement_error,
                record=update)
        if shortfall:
            cause = guest_steps.describe(shortfall)
            raise AdjustmentFailed(
                reason=_('%(changed)s applied (%(persisted)s), but '
                         '%(cause)s') % {
                    'changed': changed or _('no change'),
                    'persisted': (_('persisted') if persisted
                                  else _('not persisted')),
                    'cause': cause},
                applied=changed or _('no change'), persisted=persisted,
                cause=cause, record=update, status=sizing.STATUS_PARTIAL)
        update.status(sizing.STATUS_SUCCESS, context.request_id)
        done = guest_steps.describe(_describe_success(changed, persisted))
        if reason:
            done = _('%(done)s; autopilot: %(reason)s') % {
                'done': done, 'reason': reason}
        update.change(context.request_id, done)
        LOG.info('Elastic size adjusted (%s), persist=%s%s',
                 changed or 'no change', persist,
                 ''.join(f'; {done}' for done in guest_steps.done),
                 instance=instance)
        return update

    def _adjust_stopped(self, context: nova_context.RequestContext,
                        instance: objects.Instance,
                        size: sizing.ElasticSize, domain,
                        vcpus: int | None, memory_mb: int | None,
                        persist: bool) -> sizing.RecordUpdate:
        # A stopped guest has no live size: its next start regenerates the
        # domain from the boot size, so that is all there is to change.
        if instance.vm_state != vm_states.STOPPED or not persist:
            raise AdjustmentFailed(reason=_(
                'The instance is not running (vm_state %s); only a '
                'stopped instance can be adjusted, with persist') %
                instance.vm_state)
        defined = live.read_definition(domain).current
        target_vcpus = defined.vcpus if vcpus is None else vcpus
        target_memory = defined.memory_mb if memory_mb is None else memory_mb
        _check_bounds(size, target_vcpus, target_memory)
        # Held until its start claims what it starts with.
        placement.set_allocation(context, instance, target_vcpus,
                                 target_memory)
        boot = live.persist_size(domain, target_vcpus, target_memory)
        changed = _describe_change(defined, boot)
        LOG.info('Elastic boot size of stopped instance set (%s)',
                 changed or 'no change', instance=instance)
        return sizing.RecordUpdate().size(
            instance, vcpus=boot.vcpus, memory_mb=boot.memory_mb,
            boot_vcpus=boot.vcpus, boot_memory_mb=boot.memory_mb).status(
            sizing.STATUS_SUCCESS, context.request_id).change(
            context.request_id,
            _('%s, persisted while stopped') % (changed or _('no change')))


class GuestSteps:
    """What the guest agent was asked to do in an adjustment.

    A step that fails changes nothing and does not stop the adjustment:
    libvirt still asks the guest itself (ACPI), and what the guest runs
    with is read afterwards.
    """

    def __init__(self) -> None:
        self.done: list[str] = []
        self.failed: list[str] = []

    def run(self, done: str, step, *args) -> set[int]:
        """``step(*args)``, which returns the vCPUs the agent changed,
        described by ``done`` (``%s``: the vCPUs); those vCPUs (none when
        it failed)."""
        try:
            ids = step(*args)
        except live.GuestAgentError as e:
            self.failed.append(str(e))
            return set()
        if ids:
            self.done.append(done % live.format_cpulist(ids))
        return ids

    def describe(self, text: str) -> str:
        """``text``, then what the agent did and what failed."""
        parts = [text] + self.done + [
            _('the guest agent failed: %s') % error for error in self.failed]
        return '; '.join(parts)


# The guest agent as nova_ext.virt.live reads it, as the API reports it.
_GUEST_AGENT = {
    live.AGENT_ANSWERING: sizing.GUEST_AGENT_ANSWERING,
    live.AGENT_NOT_ANSWERING: sizing.GUEST_AGENT_NOT_ANSWERING,
    live.AGENT_NOT_CONFIGURED: sizing.GUEST_AGENT_NOT_CONFIGURED,
}


def _guest_shortfall(final: live.LiveSize, guest: live.GuestView,
                     grew: bool) -> str | None:
    """Why the guest does not run with the size libvirt gave it, or None.

    A guest whose agent answers says how many vCPUs it has online. One
    whose domain has the agent's channel and whose agent does not answer
    cannot say whether it brought new vCPUs up. A domain without the
    channel (its image does not ask for one) is taken at libvirt's word,
    as before the agent was asked.
    """
    if guest.agent == live.AGENT_ANSWERING and (
            guest.online_vcpus < final.vcpus):
        return _('the guest runs %(online)d of its %(vcpus)d vCPUs '
                 'online') % {'online': guest.online_vcpus,
                              'vcpus': final.vcpus}
    if guest.agent == live.AGENT_NOT_ANSWERING and grew:
        return _('whether the guest runs its new vCPUs online is not known: '
                 '%s') % guest.agent_error
    return None


def _check_bounds(size: sizing.ElasticSize, vcpus: int,
                  memory_mb: int) -> None:
    # The API refused these already; a request that still gets here (a
    # direct RPC) is refused, never clamped.
    if not size.floor_vcpus <= vcpus <= size.max_vcpus:
        raise AdjustmentFailed(reason=_(
            '%(value)d vCPUs is outside %(low)d..%(high)d') % {
            'value': vcpus, 'low': size.floor_vcpus,
            'high': size.max_vcpus})
    if vcpus % size.vcpu_step:
        raise AdjustmentFailed(reason=_(
            '%(value)d vCPUs is not a multiple of %(step)d, the threads per '
            'core of the CPU topology') % {
            'value': vcpus, 'step': size.vcpu_step})
    if not size.floor_memory_mb <= memory_mb <= size.max_memory_mb:
        raise AdjustmentFailed(reason=_(
            '%(value)d MiB is outside %(low)d..%(high)d MiB') % {
            'value': memory_mb, 'low': size.floor_memory_mb,
            'high': size.max_memory_mb})


def _finish_event_with_failure(context: nova_context.RequestContext,
                               instance: objects.Instance, host: str,
                               reason: str) -> None:
    """End the adjustment's event (of ``context.request_id``) as Error."""
    event = EVENT
    try:
        action = objects.InstanceAction.get_by_request_id(
            context, instance.uuid, context.request_id)
        if action is not None and action.action == sizing.AUTO_ACTION:
            # Its event is named after its reason.
            event = next(
                (started.event for started in
                 objects.InstanceActionEventList.get_by_action(
                     context, action.id)
                 if started.event.startswith(sizing.AUTO_EVENT)),
                sizing.AUTO_EVENT)
        objects.InstanceActionEvent.event_finish_with_failure(
            context, instance.uuid, event, exc_val=reason, exc_tb=reason,
            want_result=False)
    except exception.InstanceActionEventNotFound:
        # Interrupted before the compute started its event.
        try:
            objects.InstanceActionEvent.event_start(
                context, instance.uuid, event, want_result=False, host=host)
            objects.InstanceActionEvent.event_finish_with_failure(
                context, instance.uuid, event, exc_val=reason,
                exc_tb=reason, want_result=False)
        except exception.InstanceActionNotFound:
            LOG.warning('The action of interrupted adjustment %s is gone',
                        context.request_id, instance=instance)
    except exception.InstanceActionNotFound:
        LOG.warning('The action of interrupted adjustment %s is gone',
                    context.request_id, instance=instance)


def _newest_action(context: nova_context.RequestContext,
                   instance: objects.Instance):
    actions = objects.InstanceActionList.get_by_instance_uuid(
        context, instance.uuid, limit=1)
    return actions[0] if actions else None


def _has_record(instance: objects.Instance) -> bool:
    return sizing.SYSMETA_FLAVOR in (instance.system_metadata or {})


def _as_dict(size: live.LiveSize) -> dict:
    return {'vcpus': size.vcpus, 'memory_mb': size.memory_mb}


def _describe_change(before: live.LiveSize, after: live.LiveSize) -> str:
    """``vcpus 2 -> 4, memory_mb 2048 -> 3072``: what changed, or ''."""
    parts = []
    if after.vcpus != before.vcpus:
        parts.append(f'vcpus {before.vcpus} -> {after.vcpus}')
    if after.memory_mb != before.memory_mb:
        parts.append(f'memory_mb {before.memory_mb} -> {after.memory_mb}')
    return ', '.join(parts)


def _describe_success(changed: str, persist: bool) -> str:
    """``vcpus 2 -> 4, persisted``: the change record of a success."""
    return _('%(changed)s, %(persisted)s') % {
        'changed': changed or _('no change'),
        'persisted': _('persisted') if persist else _('not persisted')}


def _describe_failure(error: Exception, message: str) -> str:
    """The change record of a failure: what was applied, then why not.

    What was applied comes first, so that a long hypervisor message cut
    to the record's 255 characters never hides it.
    """
    if isinstance(error, AdjustmentFailed) and (
            error.status == sizing.STATUS_PARTIAL):
        return _('partial, applied %(applied)s, %(persisted)s: '
                 '%(cause)s') % {
            'applied': error.applied, 'cause': error.cause,
            'persisted': (_('persisted') if error.persisted
                          else _('not persisted'))}
    if isinstance(error, AdjustmentFailed) and error.applied:
        return _('failed, applied %(applied)s, %(persisted)s: '
                 '%(cause)s') % {
            'applied': error.applied, 'cause': error.cause,
            'persisted': (_('persisted') if error.persisted
                          else _('not persisted'))}
    if isinstance(error, AdjustmentFailed):
        return _('failed, nothing applied: %s') % error.cause
    if isinstance(error, _EXPECTED_FAILURES):
        # Placement refused before libvirt was asked.
        return _('failed, nothing applied: %s') % message
    # Unexpected: what, if anything, reached the guest is unknown here;
    # the instance's recorded size still says what was confirmed.
    return _('failed: %s') % message
