"""The os-xloud-host-exposure API: what each compute host would face if
every elastic guest on it grew to its flavor's maximum.

``GET /os-xloud-host-exposure[?host=H]`` answers, per compute node, the
placement capacity, allocation, headroom to the maximum and whether a
full burst would exceed capacity, for VCPU and MEMORY_MB
(``nova_ext.exposure``, ``doc/api.md``). Admin only
(``xloud:elastic_sizing:host_exposure``); served by Nova's own
``wsgi.Resource`` (see ``nova_ext.api.filter``).
"""

from __future__ import annotations

import webob
from nova import exception
from nova.api import validation
from nova.api.openstack import wsgi

from nova_ext import exposure, policies
from nova_ext.api import schemas


@validation.validated
class HostExposureController(wsgi.Controller):
    """Reports the burst exposure of the compute hosts to an admin."""

    @wsgi.expected_errors((400, 403, 404))
    @validation.query_schema(schemas.host_exposure_query)
    @validation.response_body_schema(schemas.host_exposure_response)
    def index(self, req: wsgi.Request) -> dict:
        """Every compute host's exposure, or the one of ``host``."""
        context = req.environ['nova.context']
        context.can(policies.HOST_EXPOSURE,
                    target={'project_id': context.project_id})
        try:
            report = exposure.report(context.elevated(),
                                     host=req.GET.get('host'))
        except exception.ComputeHostNotFound as e:
            raise webob.exc.HTTPNotFound(explanation=e.format_message())
        return {'host_exposure': report.to_dict()}
