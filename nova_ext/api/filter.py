"""Paste filter that serves os-xloud-adjust inside nova-api.

Placed after ``keystonecontext`` in the ``openstack_compute_api_v21``
pipeline, it sees every compute API request with Nova's
``RequestContext`` already built:

* ``/os-xloud-adjust[/{server_id}]`` (with or without the ``/{project_id}``
  prefix Nova still accepts) is routed with Nova's own ``ProjectMapper`` to
  ``ElasticSizeController`` behind Nova's ``wsgi.Resource``, and
  ``/os-xloud-audit`` the same way to ``audit.AuditController``,
  ``/os-xloud-flavor-minimums/{flavor_id}[/action]`` to
  ``flavor_minimums.FlavorMinimumsController``, and
  ``/os-xloud-host-exposure`` to ``host_exposure.HostExposureController``;
* ``POST /flavors/{id}/os-extra_specs`` and
  ``PUT /flavors/{id}/os-extra_specs/{key}`` setting ``minimum_cpu`` /
  ``minimum_memory`` are checked against Nova's validators and against the
  flavor's own vcpus / ram before Nova stores anything;
* everything else goes to Nova untouched.
"""

import webob.dec
import webob.exc
from nova import exception, objects
from nova.api import openstack as nova_openstack
from nova.api import wsgi as base_wsgi
from nova.api.openstack import wsgi
from nova.api.validation.extra_specs import validators
from nova.i18n import _
from nova.policies import flavor_extra_specs as fes_policies
from oslo_log import log as logging
from oslo_serialization import jsonutils

from nova_ext import compatibility, conf, policies, sizing
from nova_ext.api import audit, controller, flavor_minimums, host_exposure

LOG = logging.getLogger(__name__)
CONF = conf.CONF

ADJUST_ROUTES = (
    ('/os-xloud-adjust', 'GET', 'index'),
    ('/os-xloud-adjust/{server_id}', 'GET', 'show'),
    ('/os-xloud-adjust/{server_id}', 'POST', 'adjust'),
    ('/os-xloud-adjust/{server_id}/autopilot', 'PUT', 'update_autopilot'),
)
AUDIT_ROUTES = (
    ('/os-xloud-audit', 'GET', 'index'),
    ('/os-xloud-audit', 'POST', 'create'),
)
FLAVOR_MINIMUMS_ROUTES = (
    ('/os-xloud-flavor-minimums/{flavor_id}', 'GET', 'show'),
    ('/os-xloud-flavor-minimums/{flavor_id}/action', 'POST', 'apply'),
)
HOST_EXPOSURE_ROUTES = (
    ('/os-xloud-host-exposure', 'GET', 'index'),
)
EXTRA_SPECS_ROUTES = (
    ('/flavors/{flavor_id}/os-extra_specs', 'POST', 'create'),
    ('/flavors/{flavor_id}/os-extra_specs/{key}', 'PUT', 'update'),
)
# The flavor field each minimum must not exceed, under either spelling,
# and the dimension it makes elastic.
MINIMUM_LIMITS = {
    sizing.MINIMUM_CPU: 'vcpus',
    sizing.MINIMUM_MEMORY: 'memory_mb',
    sizing.LEGACY_KEYS[sizing.MINIMUM_CPU]: 'vcpus',
    sizing.LEGACY_KEYS[sizing.MINIMUM_MEMORY]: 'memory_mb',
}
MINIMUM_DIMENSIONS = {
    'vcpus': compatibility.VCPUS,
    'memory_mb': compatibility.MEMORY,
}


class ElasticSizingFilter(base_wsgi.Middleware):
    """Serves the os-xloud-adjust API and guards the minimum_* specs."""

    def __init__(self, application) -> None:
        super().__init__(application)
        self.resource = wsgi.Resource(controller.ElasticSizeController())
        self.adjust_map = nova_openstack.ProjectMapper()
        for path, method, action in ADJUST_ROUTES:
            self.adjust_map.create_route(path, method, self.resource, action)
        self.audit_resource = wsgi.Resource(audit.AuditController())
        self.audit_map = nova_openstack.ProjectMapper()
        for path, method, action in AUDIT_ROUTES:
            self.audit_map.create_route(path, method, self.audit_resource,
                                        action)
        self.flavor_minimums_resource = wsgi.Resource(
            flavor_minimums.FlavorMinimumsController())
        self.flavor_minimums_map = nova_openstack.ProjectMapper()
        for path, method, action in FLAVOR_MINIMUMS_ROUTES:
            self.flavor_minimums_map.create_route(
                path, method, self.flavor_minimums_resource, action)
        self.host_exposure_resource = wsgi.Resource(
            host_exposure.HostExposureController())
        self.host_exposure_map = nova_openstack.ProjectMapper()
        for path, method, action in HOST_EXPOSURE_ROUTES:
            self.host_exposure_map.create_route(
                path, method, self.host_exposure_resource, action)
        self.extra_specs_map = nova_openstack.ProjectMapper()
        for path, method, action in EXTRA_SPECS_ROUTES:
            self.extra_specs_map.create_route(path, method, None, action)

    @webob.dec.wsgify(RequestClass=wsgi.Request)
    def __call__(self, req: wsgi.Request):
        match = self.adjust_map.routematch(environ=req.environ)
        if match:
            policies.register_rules()
            req.environ['wsgiorg.routing_args'] = ((), match[0])
            return self.resource
        match = self.audit_map.routematch(environ=req.environ)
        if match:
            policies.register_rules()
            req.environ['wsgiorg.routing_args'] = ((), match[0])
            return self.audit_resource
        match = self.flavor_minimums_map.routematch(environ=req.environ)
        if match:
            policies.register_rules()
            req.environ['wsgiorg.routing_args'] = ((), match[0])
            return self.flavor_minimums_resource
        match = self.host_exposure_map.routematch(environ=req.environ)
        if match:
            policies.register_rules()
            req.environ['wsgiorg.routing_args'] = ((), match[0])
            return self.host_exposure_resource
        match = self.extra_specs_map.routematch(environ=req.environ)
        if match:
            fault = self._check_minimum_specs(req, match[0])
            if fault is not None:
                return fault
        return self.application

    def _check_minimum_specs(self, req: wsgi.Request,
                             args: dict) -> wsgi.Fault | None:
        """A 400 fault for a bad minimum_* value, None to let Nova go on.

        Whatever is not ours to judge (a malformed body, an unknown
        flavor, a caller Nova will refuse, other keys) is left to Nova's
        own controller and its answer.
        """
        context = req.environ.get('nova.context')
        try:
            body = jsonutils.loads(req.body)
        except ValueError:
            return None
        if args['action'] == 'create':
            specs = body.get('extra_specs') if isinstance(body, dict) else None
        else:
            specs = body
        if not isinstance(specs, dict) or context is None:
            return None
        minimums = {key: specs[key] for key in MINIMUM_LIMITS
                    if key in specs}
        # A setting that makes a dimension non-elastic, added to a flavor
        # that already has a minimum, is judged as well.
        if not minimums and not compatibility.spec_conflicts(
                {key: str(value) for key, value in specs.items()}) and (
                'hw:cpu_threads' not in specs) and (
                sizing.MEMORY_MODEL not in specs):
            return None
        policy = fes_policies.POLICY_ROOT % args['action']
        if not context.can(policy, target={}, fatal=False):
            return None
        try:
            req.set_api_version_request()
        except (exception.InvalidAPIVersionString,
                exception.InvalidGlobalAPIVersion):
            return None

        try:
            flavor = objects.Flavor.get_by_flavor_id(context,
                                                     args['flavor_id'])
        except exception.FlavorNotFound:
            return None
        if sizing.MEMORY_MODEL in specs:
            value = specs[sizing.MEMORY_MODEL]
            text = value if isinstance(value, str) else jsonutils.dumps(value)
            try:
                validators.validate(sizing.MEMORY_MODEL, text)
            except exception.ValidationError as e:
                return _bad_request(_(
                    'Invalid extra spec %(key)s=%(value)s: %(reason)s') % {
                        'key': sizing.MEMORY_MODEL, 'value': text,
                        'reason': e.format_message()})
        for key, value in minimums.items():
            # Nova runs its validators from microversion 2.86 on; these
            # keys drive the size guests boot with, so they are checked at
            # every microversion.
            text = value if isinstance(value, str) else jsonutils.dumps(value)
            try:
                validators.validate(key, text)
            except exception.ValidationError as e:
                return _bad_request(_(
                    'Invalid extra spec %(key)s=%(value)s: %(reason)s') % {
                        'key': key, 'value': text,
                        'reason': e.format_message()})
            flavor_field = MINIMUM_LIMITS[key]
            limit = getattr(flavor, flavor_field)
            if int(text) > limit:
                return _bad_request(_(
                    'Validation failed; extra spec %(key)s=%(value)s is '
                    'above the flavor\'s %(field)s %(limit)d: the minimum '
                    'cannot exceed the maximum.') % {
                        'key': key, 'value': text, 'field': flavor_field,
                        'limit': limit})
            if flavor_field == 'memory_mb' and (
                    int(text) < CONF.xloud.memory_floor_mb):
                return _bad_request(_(
                    'Validation failed; extra spec %(key)s=%(value)s is '
                    'below [xloud] memory_floor_mb %(floor)d MiB, the least '
                    'any guest is given.') % {
                        'key': key, 'value': text,
                        'floor': CONF.xloud.memory_floor_mb})
        return self._check_conflicts(flavor, specs)

    @staticmethod
    def _check_conflicts(flavor: objects.Flavor,
                         specs: dict) -> wsgi.Fault | None:
        """A 400 when the flavor, with ``specs`` set, would have a minimum
        for a dimension one of its specs makes non-elastic."""
        merged = dict(flavor.extra_specs or {})
        merged.update({key: value if isinstance(value, str)
                       else jsonutils.dumps(value)
                       for key, value in specs.items()})
        conflicts = compatibility.spec_conflicts(merged)
        step = compatibility.vcpu_step(merged)
        for key, field in MINIMUM_LIMITS.items():
            if field == 'vcpus' and key in merged and (
                    str(merged[key]).strip().isdigit() and
                    int(merged[key]) % step):
                return _bad_request(_(
                    'Validation failed; extra spec %(key)s=%(value)s is not '
                    'a multiple of hw:cpu_threads=%(step)d: vCPUs are '
                    'adjusted in whole cores.') % {
                        'key': key, 'value': merged[key], 'step': step})
            dimension = MINIMUM_DIMENSIONS[field]
            if key in merged and dimension in conflicts:
                return _bad_request(_(
                    'Validation failed; extra spec %(key)s cannot be set on '
                    'this flavor: %(reason)s.') % {
                        'key': key, 'reason': conflicts[dimension]})
        if merged.get(sizing.MEMORY_MODEL) == (
                sizing.MEMORY_MODEL_VIRTIO_MEM):
            return ElasticSizingFilter._check_virtio_mem(flavor, merged)
        return None

    @staticmethod
    def _check_virtio_mem(flavor: objects.Flavor,
                          specs: dict) -> wsgi.Fault | None:
        """virtio-mem plugs whole blocks: the guest's RAM (the minimum)
        and what the device adds (up to the flavor's ram) must be whole
        blocks too."""
        block = sizing.VIRTIO_MEM_BLOCK_MB
        sizes = [(_('the flavor\'s ram'), flavor.memory_mb)]
        for key in (sizing.MINIMUM_MEMORY,
                    sizing.LEGACY_KEYS[sizing.MINIMUM_MEMORY]):
            value = str(specs.get(key, '')).strip()
            if value.isdigit():
                sizes.append((f'{key}={value}', int(value)))
                break
        for name, megabytes in sizes:
            if megabytes % block:
                return _bad_request(_(
                    'Validation failed; %(name)s is not a multiple of '
                    '%(block)d MiB: %(key)s=%(model)s plugs memory in '
                    'blocks of %(block)d MiB.') % {
                        'name': name, 'block': block,
                        'key': sizing.MEMORY_MODEL,
                        'model': sizing.MEMORY_MODEL_VIRTIO_MEM})
        return None


def _bad_request(explanation: str) -> wsgi.Fault:
    return wsgi.Fault(webob.exc.HTTPBadRequest(explanation=explanation))


def filter_factory(global_conf: dict, **local_conf):
    """Paste entry point: ``paste.filter_factory``."""

    def _filter(app):
        return ElasticSizingFilter(app)

    return _filter
