"""The os-xloud-adjust API: read and change the current size of servers.

Served by Nova's own ``wsgi.Resource`` (see ``nova_ext.api.filter``), so
faults, JSON, request ids and microversion headers are Nova's.
"""

import datetime
from http import HTTPStatus

import oslo_messaging as messaging
import webob
from nova import exception, objects, thread_pool_factory
from nova.api import validation
from nova.api.openstack import common, wsgi
from nova.compute import api as compute
from nova.compute import vm_states
from nova.i18n import _
from nova.policies import extended_server_attributes as esa_policies
from nova.policies import servers as server_policies
from oslo_log import log as logging
from oslo_utils import strutils, timeutils

from nova_ext import (
    compatibility,
    conf,
    placement,
    policies,
    quota,
    readiness,
    rpcapi,
    sizing,
)
from nova_ext import exception as xloud_exception
from nova_ext.api import schemas, views

LOG = logging.getLogger(__name__)
CONF = conf.CONF

ACTION = sizing.ACTION
# The instance action event the API records when it cannot hand the
# adjustment to the compute host.
API_EVENT = sizing.API_EVENT
LIVE_STATES = (vm_states.ACTIVE, vm_states.PAUSED)
ADJUSTABLE_STATES = LIVE_STATES + (vm_states.STOPPED,)


def size_value(body: dict, key: str) -> int | None:
    """A size from a body that passed ``schemas.adjust``, as an int."""
    value = body.get(key)
    if value is None:
        return None
    # JSON Schema's "integer" includes 2.0; Nova's conventions do not.
    if isinstance(value, float):
        raise exception.ValidationError(detail=_(
            'Invalid input for field/attribute %(key)s. Value: %(value)s. '
            '%(value)r is not an integer') % {'key': key, 'value': value})
    return int(value)


@compute.check_instance_state(vm_state=ADJUSTABLE_STATES, task_state=[None])
def _check_adjustable_state(_compute_api, context, instance) -> None:
    """Nova's own state check, raising InstanceInvalidState.

    Also refuses an instance that never finished building (launched_at).
    """


def _minimum_key(instance: objects.Instance, key: str) -> str:
    """The spelling of the minimum ``key`` the server's flavor uses."""
    found = sizing.flavor_minimum_spec(instance.flavor, key)
    return key if found is None else found[0]


@validation.validated
class ElasticSizeController(wsgi.Controller):
    """Current, minimum and maximum size of servers, and its adjustment."""

    _view_builder_class = views.ViewBuilder

    def __init__(self) -> None:
        super().__init__()
        self.compute_api = compute.API()
        self._sizing_rpcapi = None

    @property
    def sizing_rpcapi(self) -> rpcapi.ElasticSizingAPI:
        # Built on first use, as Nova's compute RPC API builds its router:
        # loading the paste pipeline must not need the RPC transport.
        if self._sizing_rpcapi is None:
            self._sizing_rpcapi = rpcapi.ElasticSizingAPI()
        return self._sizing_rpcapi

    def _get_instance(self, context, server_id: str) -> objects.Instance:
        return common.get_instance(
            self.compute_api, context, server_id,
            expected_attrs=['flavor', 'system_metadata'])

    @staticmethod
    def _show_host(context, instance: objects.Instance) -> bool:
        # The host is shown to whoever Nova shows OS-EXT-SRV-ATTR:host to.
        return context.can(esa_policies.BASE_POLICY_NAME,
                           target={'project_id': instance.project_id},
                           fatal=False)

    @wsgi.expected_errors((400, 403))
    @validation.query_schema(schemas.index_query)
    @validation.response_body_schema(schemas.index_response)
    def index(self, req: wsgi.Request) -> dict:
        """The recorded sizes of many servers, in one call."""
        context = req.environ['nova.context']
        context.can(policies.INDEX,
                    target={'project_id': context.project_id})
        params = req.GET
        try:
            all_tenants = common.is_all_tenants(params)
        except exception.InvalidInput as e:
            raise webob.exc.HTTPBadRequest(explanation=e.format_message())

        search_opts = {'deleted': False}
        for key in ('name', 'flavor'):
            if key in params:
                search_opts[key] = params[key]
        if 'host' in params:
            # Nova's server list ignores the host filter for whoever may
            # not use it; here it is refused, not silently widened.
            context.can(server_policies.SERVERS % 'allow_all_filters')
            search_opts['host'] = params['host']

        lookup_context = context
        if all_tenants:
            context.can(policies.INDEX_ALL_TENANTS,
                        target={'project_id': context.project_id})
            lookup_context = context.elevated()
            if 'project_id' in params:
                search_opts['project_id'] = params['project_id']
        else:
            # As Nova's server list: without all_tenants, the caller's own
            # project only, whatever project_id says.
            search_opts['project_id'] = context.project_id

        with_readiness = strutils.bool_from_string(
            params.get('readiness', 'false'))
        expected_attrs = ['flavor', 'system_metadata']
        if with_readiness:
            # Readiness names the PCI devices that keep memory fixed.
            expected_attrs.append('pci_requests')
        limit, marker = common.get_limit_and_marker(req)
        try:
            instances = self.compute_api.get_all(
                lookup_context, search_opts=search_opts, limit=limit,
                marker=marker, expected_attrs=expected_attrs,
                all_tenants=all_tenants)
        except exception.MarkerNotFound:
            msg = _('marker [%s] not found') % marker
            raise webob.exc.HTTPBadRequest(explanation=msg)
        except exception.FlavorNotFound:
            instances = objects.InstanceList()

        observed = {}
        if with_readiness:
            observed = self._observe(context, instances)
        show_host = {}
        sizes = []
        for instance in instances:
            # One policy check per project, not per server.
            if instance.project_id not in show_host:
                show_host[instance.project_id] = self._show_host(context,
                                                                 instance)
            size = sizing.ElasticSize.from_instance(instance)
            view = self._view_builder.size(
                instance, show_host[instance.project_id], size=size)
            if instance.uuid in observed:
                view.update(readiness.describe(instance, size,
                                               observed[instance.uuid]))
            sizes.append(view)
        return self._view_builder.index(req, sizes)

    @wsgi.expected_errors((403, 404))
    @validation.query_schema({'type': 'object', 'properties': {},
                              'additionalProperties': False})
    @validation.response_body_schema(schemas.show_response)
    def show(self, req: wsgi.Request, server_id: str) -> dict:
        """The size of one server, live from its host when it answers."""
        context = req.environ['nova.context']
        instance = self._get_instance(context, server_id)
        context.can(policies.SHOW,
                    target={'project_id': instance.project_id})
        observed = self._observe(context, [instance])[instance.uuid]
        # During an adjustment the record says what it started from.
        live = observed.size if instance.task_state is None else None
        size = sizing.ElasticSize.from_instance(instance)
        server = self._view_builder.show(
            instance, self._show_host(context, instance), live, size)
        server.update(readiness.describe(instance, size, observed))
        return {'server': server}

    def _observe(self, context, instances
                 ) -> dict[str, readiness.Observed]:
        """What the compute hosts read of these instances' guests.

        One call per host, the hosts asked at once, each given
        ``[xloud] readiness_timeout``; an instance whose guest does not
        run, or whose host does not answer, gets the reason instead.
        """
        observed = {}
        by_host: dict[str, list[objects.Instance]] = {}
        for instance in instances:
            if instance.vm_state not in LIVE_STATES:
                observed[instance.uuid] = readiness.Observed.failed(_(
                    'The server is %s: its guest is read while it '
                    'runs.') % instance.vm_state)
            elif not instance.host:
                observed[instance.uuid] = readiness.Observed.failed(
                    _('The server has no compute host.'))
            else:
                by_host.setdefault(instance.host, []).append(instance)
        timeout = CONF.xloud.readiness_timeout
        asked = {
            host: thread_pool_factory.spawn(
                self._describe_guests, context, host,
                [instance.uuid for instance in on_host], timeout)
            for host, on_host in by_host.items()}
        for host, answer in asked.items():
            answers, error = answer.result()
            for instance in by_host[host]:
                found = (readiness.Observed.failed(error) if error is not None
                         else readiness.Observed.from_host(
                             answers.get(instance.uuid)))
                if found.size is not None and self._valid_live_size(
                        instance, found.size) is None:
                    found = readiness.Observed.failed(_(
                        'The compute host %(host)s reported an impossible '
                        'live size %(size)r.') % {'host': host,
                                                  'size': found.size})
                observed[instance.uuid] = found
        return observed

    def _describe_guests(self, context, host: str, uuids: list[str],
                         timeout: int) -> tuple[dict, str | None]:
        """``(answers, None)``, or ``({}, why)`` when the host did not
        answer; never raises."""
        try:
            return self.sizing_rpcapi.describe_guests(
                context, host, uuids, timeout=timeout), None
        except messaging.MessagingTimeout:
            error = _('The compute host %(host)s did not answer within '
                      '%(timeout)d seconds.') % {'host': host,
                                                 'timeout': timeout}
        except (messaging.UnsupportedVersion, messaging.NoSuchMethod,
                messaging.RemoteError) as e:
            error = _('The compute host %(host)s could not describe its '
                      'guests (elastic sizing %(version)s needed): '
                      '%(error)s') % {'host': host, 'error': e,
                                      'version': rpcapi.VERSION}
        except Exception as e:
            error = _('The compute host %(host)s could not be asked: '
                      '%(error)s') % {'host': host, 'error': e}
        LOG.warning('Readiness not read: %s', error)
        return {}, error

    @staticmethod
    def _valid_live_size(instance: objects.Instance,
                         live: dict | None) -> dict | None:
        """The live size the host reported, if it is one."""
        if live is None:
            return None
        flavor = instance.flavor
        try:
            vcpus, memory_mb = live['vcpus'], live['memory_mb']
            valid = (type(vcpus) is int and type(memory_mb) is int and
                     1 <= vcpus <= flavor.vcpus and
                     1 <= memory_mb <= flavor.memory_mb)
        except (KeyError, TypeError):
            valid = False
        if not valid:
            LOG.warning('Showing the recorded size: host %(host)s reported '
                        'an invalid live size %(live)r',
                        {'host': instance.host, 'live': live},
                        instance=instance)
            return None
        return {'vcpus': vcpus, 'memory_mb': memory_mb}

    @wsgi.response(HTTPStatus.ACCEPTED)
    @wsgi.expected_errors((400, 403, 404, 409, 503))
    @validation.schema(schemas.adjust)
    @validation.response_body_schema(schemas.adjust_response)
    def adjust(self, req: wsgi.Request, server_id: str, body: dict) -> dict:
        """Hand a new current size to the server's compute host."""
        context = req.environ['nova.context']
        vcpus = size_value(body, 'current_vcpus')
        memory_mb = size_value(body, 'current_memory_mb')
        if vcpus is None and memory_mb is None:
            raise exception.ValidationError(detail=_(
                'At least one of current_vcpus and current_memory_mb is '
                'required.'))
        persist = body.get('persist', True)

        instance = self._get_instance(context, server_id)
        context.can(policies.ADJUST,
                    target={'project_id': instance.project_id,
                            'user_id': instance.user_id})

        size = sizing.ElasticSize.from_instance(instance)
        self._check_elastic(instance, size, vcpus, memory_mb)
        self._check_bounds('current_vcpus', vcpus, size.floor_vcpus,
                           size.max_vcpus, size.minimum_vcpus,
                           _minimum_key(instance, sizing.MINIMUM_CPU),
                           'vcpus')
        self._check_bounds('current_memory_mb', memory_mb,
                           size.floor_memory_mb, size.max_memory_mb,
                           size.minimum_memory_mb,
                           _minimum_key(instance, sizing.MINIMUM_MEMORY),
                           'memory_mb')
        block = sizing.VIRTIO_MEM_BLOCK_MB
        if memory_mb is not None and memory_mb % block and (
                size.memory_model == sizing.MEMORY_MODEL_VIRTIO_MEM):
            raise webob.exc.HTTPBadRequest(explanation=_(
                'current_memory_mb %(memory)d is not a multiple of %(block)d '
                'MiB: the server\'s flavor plugs memory in blocks of '
                '%(block)d MiB (%(key)s=%(model)s).') % {
                    'memory': memory_mb, 'block': block,
                    'key': sizing.MEMORY_MODEL,
                    'model': sizing.MEMORY_MODEL_VIRTIO_MEM})
        self._check_adjustable(context, instance, persist, memory_mb)

        self._check_compute_up(context, instance)

        claimed_from = self._claim_grow(context, instance, vcpus, memory_mb)
        try:
            # Nova's own operations are refused from here on, and this
            # one is refused if one of them started meanwhile.
            instance.task_state = sizing.ADJUSTING_TASK_STATE
            try:
                instance.save(expected_task_state=[None],
                              expected_vm_state=[instance.vm_state])
            except (exception.UnexpectedTaskStateError,
                    exception.InstanceUpdateConflict) as e:
                raise webob.exc.HTTPConflict(
                    explanation=e.format_message())
        except Exception:
            self._release_grow(context, instance, claimed_from)
            raise
        objects.InstanceAction.action_start(
            context, instance.uuid, ACTION, want_result=False)
        self._hand_over(context, instance, vcpus, memory_mb, persist,
                        claimed_from)

        return {'adjustment': {
            'server_id': instance.uuid,
            'request_id': context.request_id,
            'current_vcpus': vcpus,
            'current_memory_mb': memory_mb,
            'persist': persist,
            'action': ACTION,
        }}

    @wsgi.expected_errors((400, 403, 404, 409))
    @validation.schema(schemas.autopilot_update)
    @validation.response_body_schema(schemas.autopilot_update_response)
    def update_autopilot(self, req: wsgi.Request, server_id: str,
                         body: dict) -> dict:
        """Set what the autopilot sizes of one server and in which mode."""
        context = req.environ['nova.context']
        wanted = body['autopilot']
        instance = self._get_instance(context, server_id)
        context.can(policies.AUTOPILOT,
                    target={'project_id': instance.project_id,
                            'user_id': instance.user_id})
        dimensions = wanted['dimensions']
        if dimensions is not None:
            conflicts = compatibility.instance_conflicts(instance,
                                                         devices=True)
            fixed = [dimension for dimension in dimensions
                     if dimension in conflicts]
            if fixed:
                raise webob.exc.HTTPConflict(explanation=_(
                    '%(dimension)s of server %(server)s cannot be sized '
                    'automatically: %(reason)s.') % {
                        'dimension': fixed[0], 'server': instance.uuid,
                        'reason': conflicts[fixed[0]]})
            dimensions = tuple(dimensions)
        sizing.save_record(instance, sizing.RecordUpdate().autosize(
            dimensions, wanted['mode']))
        setting = sizing.autosize(instance, sizing.AUTOPILOT_ON)
        return {'autopilot': {
            'dimensions': list(setting.dimensions),
            'dimensions_from': setting.dimensions_from,
            'instance_mode': setting.instance_mode,
        }}

    def _hand_over(self, context, instance: objects.Instance,
                   vcpus: int | None, memory_mb: int | None, persist: bool,
                   claimed_from: tuple[int, int] | None) -> None:
        """Have the compute host take the adjustment, or undo everything.

        The host answers once it has recorded the request as in progress;
        one that does not answer within ``[xloud] accept_timeout`` drops
        the request should it reach it later (``not_after``).
        """
        timeout = CONF.xloud.accept_timeout
        not_after = timeutils.utcnow() + datetime.timedelta(seconds=timeout)
        try:
            self.sizing_rpcapi.start_adjust(
                context, instance, vcpus, memory_mb, persist, not_after,
                timeout=timeout)
            return
        except messaging.MessagingTimeout:
            reason = _('The compute host %(host)s did not accept the '
                       'adjustment within %(timeout)d seconds; nothing was '
                       'changed.') % {'host': instance.host,
                                      'timeout': timeout}
        except (messaging.UnsupportedVersion, messaging.NoSuchMethod):
            # Raised as such by an in-process transport.
            reason = self._no_endpoint_reason(instance)
        except (messaging.RemoteError, xloud_exception.AdjustmentRefused) as e:
            refusal = xloud_exception.refusal_message(e)
            if refusal is not None:
                reason = _('The compute host %(host)s refused the '
                           'adjustment: %(error)s') % {
                    'host': instance.host, 'error': refusal}
            elif e.exc_type in ('UnsupportedVersion', 'NoSuchMethod'):
                reason = self._no_endpoint_reason(instance)
            else:
                reason = _('The compute host %(host)s failed to take the '
                           'adjustment: %(error)s; nothing was changed.') % {
                    'host': instance.host, 'error': e.value}
        except Exception as e:
            LOG.exception('Could not send the adjustment to host %s',
                          instance.host, instance=instance)
            reason = _('The adjustment could not be sent to the compute '
                       'host %(host)s: %(error)s; nothing was changed.') % {
                'host': instance.host, 'error': e}
        LOG.warning('Adjustment not taken: %s', reason, instance=instance)
        self._abandon(context, instance, reason)
        self._release_grow(context, instance, claimed_from)
        raise webob.exc.HTTPServiceUnavailable(explanation=reason)

    @staticmethod
    def _no_endpoint_reason(instance: objects.Instance) -> str:
        return _('The compute host %(host)s does not serve elastic sizing '
                 '%(version)s (is its compute_driver '
                 'xloud.XloudLibvirtDriver, and upgraded?); nothing was '
                 'changed.') % {'host': instance.host,
                                'version': rpcapi.BASE_VERSION}

    @staticmethod
    def _claim_grow(context, instance: objects.Instance, vcpus: int | None,
                    memory_mb: int | None) -> tuple[int, int] | None:
        """Claim a grow in placement before anything else happens (403
        over quota, 409 without room on the host): ``quota.claim_grow``."""
        try:
            return quota.claim_grow(context, instance, vcpus, memory_mb)
        except exception.TooManyInstances as e:
            raise webob.exc.HTTPForbidden(explanation=e.format_message())
        except placement.InsufficientCapacity as e:
            raise webob.exc.HTTPConflict(explanation=e.format_message())
        except placement.AllocationUpdateFailed as e:
            raise webob.exc.HTTPServiceUnavailable(
                explanation=e.format_message())

    @staticmethod
    def _release_grow(context, instance: objects.Instance,
                      claimed_from: tuple[int, int] | None) -> None:
        quota.release_grow(context, instance, claimed_from)

    def _check_compute_up(self, context, instance: objects.Instance) -> None:
        # As Nova does before operations that need the host: a service
        # known to be down would only leave the request waiting. (The
        # instance lookup left ``context`` targeted at its cell.)
        try:
            service = objects.Service.get_by_compute_host(context,
                                                          instance.host)
        except exception.ComputeHostNotFound as e:
            raise webob.exc.HTTPConflict(explanation=e.format_message())
        if not self.compute_api.servicegroup_api.service_is_up(service):
            raise webob.exc.HTTPConflict(explanation=_(
                'The compute service of host %s is down: the adjustment '
                'cannot be applied.') % instance.host)

    @staticmethod
    def _check_bounds(field: str, value: int | None, floor: int,
                      maximum: int, minimum: int | None, minimum_key: str,
                      flavor_field: str) -> None:
        if value is None:
            return
        if value > maximum:
            raise webob.exc.HTTPBadRequest(explanation=_(
                '%(field)s %(value)d is above the flavor\'s %(flavor_field)s '
                '%(maximum)d, the most this server can have.') % {
                    'field': field, 'value': value,
                    'flavor_field': flavor_field, 'maximum': maximum})
        if value >= floor:
            return
        if minimum is not None and minimum >= floor:
            raise webob.exc.HTTPBadRequest(explanation=_(
                '%(field)s %(value)d is below the flavor\'s %(key)s '
                '%(floor)d, the least this server is promised.') % {
                    'field': field, 'value': value, 'key': minimum_key,
                    'floor': floor})
        if minimum is None and floor == maximum:
            raise webob.exc.HTTPBadRequest(explanation=_(
                '%(field)s %(value)d is below the flavor\'s %(flavor_field)s '
                '%(floor)d: the flavor has no %(key)s, so its servers keep '
                'the size it promises ([xloud] '
                'allow_shrink_without_minimum).') % {
                    'field': field, 'value': value, 'key': minimum_key,
                    'flavor_field': flavor_field, 'floor': floor})
        raise webob.exc.HTTPBadRequest(explanation=_(
            '%(field)s %(value)d is below %(floor)d, the least any server '
            'is given ([xloud] memory_floor_mb / vcpu_floor).') % {
                'field': field, 'value': value, 'floor': floor})

    @staticmethod
    def _check_elastic(instance: objects.Instance, size: sizing.ElasticSize,
                       vcpus: int | None,
                       memory_mb: int | None) -> None:
        """409 for a dimension the server's flavor, image or devices make
        non-elastic (``nova_ext.compatibility``); 400 for vCPUs that would
        leave a core of its CPU topology with part of its threads."""
        step = size.vcpu_step
        if vcpus is not None and vcpus % step:
            raise webob.exc.HTTPBadRequest(explanation=_(
                'current_vcpus %(vcpus)d is not a multiple of %(step)d, the '
                'threads per core of the server\'s CPU topology '
                '(hw:cpu_threads).') % {'vcpus': vcpus, 'step': step})
        conflicts = compatibility.instance_conflicts(instance, devices=True)
        flavor = instance.flavor
        for field, value, dimension, maximum in (
                ('current_vcpus', vcpus, compatibility.VCPUS, flavor.vcpus),
                ('current_memory_mb', memory_mb, compatibility.MEMORY,
                 flavor.memory_mb)):
            # The flavor's own size stays allowed: it brings back a guest
            # that ran below it before the setting made it non-elastic.
            if value is not None and value != maximum and (
                    dimension in conflicts):
                raise webob.exc.HTTPConflict(explanation=_(
                    '%(field)s of server %(server)s cannot be adjusted: '
                    '%(reason)s.') % {
                        'field': field, 'server': instance.uuid,
                        'reason': conflicts[dimension]})

    @staticmethod
    def _check_adjustable(context, instance: objects.Instance,
                          persist: bool, memory_mb: int | None) -> None:
        # Unlike Nova's check_instance_lock, an admin is refused too: the
        # lock is an explicit "do not touch" and this is no rescue action.
        if instance.locked:
            e = exception.InstanceIsLocked(instance_uuid=instance.uuid)
            raise webob.exc.HTTPConflict(explanation=e.format_message())
        try:
            _check_adjustable_state(None, context, instance)
        except exception.InstanceInvalidState as e:
            common.raise_http_conflict_for_instance_invalid_state(
                e, ACTION, instance.uuid)
        if instance.vm_state == vm_states.STOPPED and not persist:
            raise webob.exc.HTTPConflict(explanation=_(
                'Server %s is stopped: only a persistent adjustment '
                '(persist=true) applies to it, at its next start.') %
                instance.uuid)
        if instance.vm_state == vm_states.PAUSED:
            # Its balloon cannot move, and a vCPU unplug cannot be
            # acknowledged, until the guest runs again: libvirt would
            # carry them out later, behind the record.
            raise webob.exc.HTTPConflict(explanation=_(
                'Server %s is paused: it cannot take a new size until it '
                'runs again (unpause it first).') % instance.uuid)

    @staticmethod
    def _abandon(context, instance: objects.Instance, reason: str) -> None:
        """End the action as failed, the way a failed compute event does,
        and give the instance back to Nova."""
        objects.InstanceActionEvent.event_start(
            context, instance.uuid, API_EVENT, want_result=False)
        objects.InstanceActionEvent.event_finish_with_failure(
            context, instance.uuid, API_EVENT, exc_val=reason,
            exc_tb=reason, want_result=False)
        objects.InstanceAction.action_finish(context, instance.uuid,
                                             want_result=False)
        instance.task_state = None
        try:
            instance.save(expected_task_state=[sizing.ADJUSTING_TASK_STATE])
        except exception.UnexpectedTaskStateError:
            LOG.warning('The instance left the adjustment\'s task state '
                        'before it was abandoned', instance=instance)
