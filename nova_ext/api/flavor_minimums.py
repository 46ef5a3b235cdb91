"""The os-xloud-flavor-minimums API: a flavor's minimums and its instances.

``GET /os-xloud-flavor-minimums/{flavor_id}`` counts, per cell, the
instances of the flavor that carry its current minimums in their embedded
flavor (the copy that governs them); ``POST
/os-xloud-flavor-minimums/{flavor_id}/action`` with ``{"apply": {}}``
writes them into the others (``nova_ext.flavor_minimums``). Admin only
(``xloud:elastic_sizing:flavor_minimums``); served by Nova's own
``wsgi.Resource`` (see ``nova_ext.api.filter``).
"""

from __future__ import annotations

import webob
from nova import exception, objects
from nova.api import validation
from nova.api.openstack import wsgi

from nova_ext import flavor_minimums, policies
from nova_ext.api import schemas


@validation.validated
class FlavorMinimumsController(wsgi.Controller):
    """Reports and applies a flavor's minimums to its instances."""

    @staticmethod
    def _flavor(context, flavor_id: str) -> objects.Flavor:
        try:
            return objects.Flavor.get_by_flavor_id(context, flavor_id)
        except exception.FlavorNotFound as e:
            raise webob.exc.HTTPNotFound(explanation=e.format_message())

    @wsgi.expected_errors((400, 403, 404))
    @validation.query_schema(schemas.flavor_minimums_query)
    @validation.response_body_schema(schemas.flavor_minimums_response)
    def show(self, req: wsgi.Request, flavor_id: str) -> dict:
        """How many instances of the flavor carry its minimums."""
        context = req.environ['nova.context']
        context.can(policies.FLAVOR_MINIMUMS,
                    target={'project_id': context.project_id})
        flavor = self._flavor(context, flavor_id)
        report = flavor_minimums.report(context.elevated(), flavor)
        return {'flavor_minimums': report.to_dict()}

    # Routed as a method of its own rather than a ``wsgi.action``: Nova's
    # action dispatch answers 404 to a body that is not a JSON object,
    # where the schema answers 400 to every malformed body.
    @wsgi.expected_errors((400, 403, 404))
    @validation.schema(schemas.flavor_minimums_apply)
    @validation.response_body_schema(schemas.flavor_minimums_apply_response)
    def apply(self, req: wsgi.Request, flavor_id: str, body: dict) -> dict:
        """Write the flavor's minimums into its instances."""
        context = req.environ['nova.context']
        context.can(policies.FLAVOR_MINIMUMS,
                    target={'project_id': context.project_id})
        flavor = self._flavor(context, flavor_id)
        report = flavor_minimums.apply(context.elevated(), flavor)
        return {'flavor_minimums': report.to_dict()}
