"""The os-xloud-audit API: the elastic sizing audit, served by nova-api.

``GET /os-xloud-audit[?host=H][&server_id=...]`` audits; ``POST
/os-xloud-audit`` with ``{"fix": true}`` also heals. Both answer the
report of ``nova_ext.audit`` (``doc/audit.md``), admin only
(``xloud:elastic_sizing:audit``). Served by Nova's own ``wsgi.Resource``
(see ``nova_ext.api.filter``).
"""

from nova.api import validation
from nova.api.openstack import wsgi

from nova_ext import audit, policies
from nova_ext.api import schemas


@validation.validated
class AuditController(wsgi.Controller):
    """Runs the audit for the caller, who must be an administrator."""

    @wsgi.expected_errors((400, 403))
    @validation.query_schema(schemas.audit_query)
    @validation.response_body_schema(schemas.audit_response)
    def index(self, req: wsgi.Request) -> dict:
        """Audit every elastic instance, one host's, or the ones named."""
        context = req.environ['nova.context']
        context.can(policies.AUDIT,
                    target={'project_id': context.project_id})
        server_ids = req.GET.getall('server_id')
        report = audit.run(context.elevated(), host=req.GET.get('host'),
                           instance_uuids=server_ids or None)
        return {'audit': report.to_dict()}

    @wsgi.expected_errors((400, 403))
    @validation.schema(schemas.audit_fix)
    @validation.response_body_schema(schemas.audit_response)
    def create(self, req: wsgi.Request, body: dict) -> dict:
        """Audit and, with ``fix``, heal and audit the healed again."""
        context = req.environ['nova.context']
        context.can(policies.AUDIT,
                    target={'project_id': context.project_id})
        report = audit.run(context.elevated(), host=body.get('host'),
                           fix=body['fix'],
                           instance_uuids=body.get('server_ids'))
        return {'audit': report.to_dict()}
