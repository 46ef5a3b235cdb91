"""The elastic sizing RPC endpoint, served by nova-compute.

``XloudLibvirtDriver`` adds it to the compute manager's
``additional_endpoints``, so it answers on Nova's ``compute`` topic under
the ``xloud`` namespace (``nova_ext.rpcapi`` is its client).

An adjustment runs under the instance's lock (the lock Nova's own instance
operations take on the compute), is reported as the ``compute_xloud_adjust``
event of the instance action the API started, and records only what
libvirt confirmed. Placement follows the size: it grows before the guest
does, so a host without room refuses the change before libvirt sees it,
and settles on the confirmed size afterwards.
"""

from __future__ import annotations

import oslo_messaging as messaging
from nova import context as nova_context
from nova import exception, objects, utils
from nova.compute import utils as compute_utils
from nova.compute import vm_states
from nova.i18n import _
from oslo_log import log as logging

from nova_ext import placement, rpcapi, sizing
from nova_ext.virt import live

LOG = logging.getLogger(__name__)

EVENT = 'compute_xloud_adjust'


class AdjustmentFailed(exception.NovaException):
    """The reason becomes the event's details, as a fault message does.

    ``applied`` says what libvirt confirmed before the failure (as
    ``_describe_change`` does, '' for nothing), ``persisted`` whether that
    was recorded as the boot size, and ``cause`` the failure itself, for
    the instance's change record.
    """

    msg_fmt = _('%(reason)s')

    def __init__(self, *, reason: str, applied: str = '',
                 persisted: bool = False, cause: str | None = None) -> None:
        super().__init__(reason=reason)
        self.applied = applied
        self.persisted = persisted
        self.cause = cause or reason


_EXPECTED_FAILURES = (AdjustmentFailed, placement.InsufficientCapacity,
                      placement.AllocationUpdateFailed)


class ElasticSizingEndpoint:

    target = messaging.Target(namespace=rpcapi.NAMESPACE,
                              version=rpcapi.VERSION)

    def __init__(self, driver, host: str) -> None:
        # ``driver`` is the XloudLibvirtDriver that serves this endpoint.
        self.driver = driver
        self.host = host

    def adjust(self, context: nova_context.RequestContext,
               instance: objects.Instance, vcpus: int | None,
               memory_mb: int | None, persist: bool) -> None:
        """Apply a new current size; the outcome is the action's event."""

        @utils.synchronized(instance.uuid)
        def locked_adjust() -> None:
            # Another adjustment or Nova operation may have run while this
            # one waited for the lock: work from what is recorded now.
            instance.refresh()
            try:
                with compute_utils.EventReporter(
                        context, EVENT, self.host, instance.uuid):
                    self._adjust(context, instance, vcpus, memory_mb,
                                 persist)
            except Exception as e:
                # The event holds the error; the instance's record says
                # the last adjustment failed, keeping any size libvirt
                # did confirm before the failure.
                expected = isinstance(e, _EXPECTED_FAILURES)
                message = (e.format_message() if expected
                           else f'{type(e).__name__}: {e}')
                sizing.record_status(instance, sizing.STATUS_ERROR,
                                     context.request_id, message)
                sizing.record_change(instance, context.request_id,
                                     _describe_failure(e, message))
                instance.save()
                if not expected:
                    raise
                LOG.error('Elastic size adjustment failed: %s', message,
                          instance=instance)

        locked_adjust()

    @messaging.expected_exceptions(exception.InstanceNotRunning,
                                   exception.InstanceNotFound)
    def get_live_size(self, context: nova_context.RequestContext,
                      instance: objects.Instance) -> dict:
        domain = self.driver.elastic_domain(instance)
        if not domain.isActive():
            raise exception.InstanceNotRunning(instance_id=instance.uuid)
        size = live.read_size(domain)
        return {'vcpus': size.vcpus, 'memory_mb': size.memory_mb}

    def _adjust(self, context: nova_context.RequestContext,
                instance: objects.Instance, vcpus: int | None,
                memory_mb: int | None, persist: bool) -> None:
        # The API checked this too, but a migration or another operation
        # may have started since; it would find the guest changed under
        # it.
        if instance.task_state is not None:
            raise AdjustmentFailed(reason=_(
                'The instance is busy (task_state %s)') % instance.task_state)
        size = sizing.ElasticSize.from_instance(instance)
        target_vcpus = size.live_vcpus if vcpus is None else vcpus
        target_memory = size.live_memory_mb if memory_mb is None else memory_mb
        # The API refused these already; a request that still gets here
        # (an older API, a direct RPC) is refused, never clamped.
        if not size.floor_vcpus <= target_vcpus <= size.max_vcpus:
            raise AdjustmentFailed(reason=_(
                '%(value)d vCPUs is outside %(low)d..%(high)d') % {
                'value': target_vcpus, 'low': size.floor_vcpus,
                'high': size.max_vcpus})
        if not size.floor_memory_mb <= target_memory <= size.max_memory_mb:
            raise AdjustmentFailed(reason=_(
                '%(value)d MiB is outside %(low)d..%(high)d MiB') % {
                'value': target_memory, 'low': size.floor_memory_mb,
                'high': size.max_memory_mb})

        domain = self.driver.elastic_domain(instance)
        if not domain.isActive():
            self._adjust_stopped(context, instance, size, target_vcpus,
                                 target_memory, persist)
            return

        # Grow first: a host without room refuses before the guest grows.
        placement.set_allocation(
            context, instance, max(target_vcpus, size.live_vcpus),
            max(target_memory, size.live_memory_mb))
        confirmed_vcpus = size.live_vcpus
        confirmed_memory = size.live_memory_mb
        failure = None
        try:
            # persist makes the whole current size the boot size, so a
            # dimension not asked for is written to the definition too
            # when it runs at a size other than its boot size.
            if vcpus is not None or (
                    persist and target_vcpus != size.boot_vcpus):
                confirmed_vcpus = live.apply_vcpus(domain, target_vcpus,
                                                   persist)
            if memory_mb is not None or (
                    persist and target_memory != size.boot_memory_mb):
                confirmed_memory = live.apply_memory(domain, target_memory,
                                                     persist)
        except live.LiveSizeError as e:
            failure = e
            # What the domain reports now is what the guest holds, whatever
            # part of the request went through.
            observed = live.read_size(domain)
            confirmed_vcpus, confirmed_memory = (observed.vcpus,
                                                 observed.memory_mb)

        changed = _describe_change(size, confirmed_vcpus, confirmed_memory)
        if changed:
            sizing.record_size(instance, vcpus=confirmed_vcpus,
                               memory_mb=confirmed_memory,
                               boot=persist and failure is None)
        placement_error = None
        try:
            placement.set_allocation(context, instance, confirmed_vcpus,
                                     confirmed_memory)
        except (placement.InsufficientCapacity,
                placement.AllocationUpdateFailed) as e:
            placement_error = e.format_message()

        if failure is not None:
            reason = str(failure)
            if changed:
                reason = _('%(reason)s (applied: %(changed)s)') % {
                    'reason': reason, 'changed': changed}
            raise AdjustmentFailed(reason=reason, applied=changed,
                                   cause=str(failure))
        if placement_error:
            raise AdjustmentFailed(
                reason=_('%(changed)s applied, but placement was not '
                         'updated: %(error)s') % {
                    'changed': changed or _('no change'),
                    'error': placement_error},
                applied=changed, persisted=persist,
                cause=_('placement was not updated: %s') % placement_error)
        sizing.record_status(instance, sizing.STATUS_SUCCESS,
                             context.request_id)
        sizing.record_change(instance, context.request_id,
                             _describe_success(changed, persist))
        instance.save()
        LOG.info('Elastic size adjusted (%s), persist=%s',
                 changed or 'no change', persist, instance=instance)

    def _adjust_stopped(self, context: nova_context.RequestContext,
                        instance: objects.Instance,
                        size: sizing.ElasticSize, vcpus: int,
                        memory_mb: int, persist: bool) -> None:
        # A stopped guest has no live size: the next start regenerates the
        # domain from the recorded boot size, so that is all there is to
        # change.
        if instance.vm_state != vm_states.STOPPED or not persist:
            raise AdjustmentFailed(reason=_(
                'The instance is not running (vm_state %s); only a '
                'stopped instance can be adjusted, with persist') %
                instance.vm_state)
        placement.set_allocation(context, instance, vcpus, memory_mb)
        changed = _describe_change(size, vcpus, memory_mb)
        sizing.record_size(instance, vcpus=vcpus, memory_mb=memory_mb,
                           boot=True)
        sizing.record_status(instance, sizing.STATUS_SUCCESS,
                             context.request_id)
        sizing.record_change(
            instance, context.request_id,
            _('%s, persisted while stopped') % (changed or _('no change')))
        instance.save()
        LOG.info('Elastic boot size of stopped instance set (%s)',
                 changed or 'no change', instance=instance)


def _describe_change(size: sizing.ElasticSize, vcpus: int,
                     memory_mb: int) -> str:
    """``vcpus 2 -> 4, memory_mb 2048 -> 3072``: what changed, or ''."""
    parts = []
    if vcpus != size.live_vcpus:
        parts.append(f'vcpus {size.live_vcpus} -> {vcpus}')
    if memory_mb != size.live_memory_mb:
        parts.append(f'memory_mb {size.live_memory_mb} -> {memory_mb}')
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
