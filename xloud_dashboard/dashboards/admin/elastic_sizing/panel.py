import horizon
from django.utils.translation import gettext_lazy as _

from xloud_dashboard.api import elastic


class ElasticSizing(horizon.Panel):
    name = _("Elastic Sizing")
    slug = 'elastic_sizing'
    permissions = ('openstack.services.compute',)
    policy_rules = (('compute', 'xloud:elastic_sizing:index:all_tenants'),)

    def allowed(self, context) -> bool:
        # Policy first: it costs no call to the cloud.
        return (super().allowed(context)
                and elastic.is_extension_offered(context['request']))
