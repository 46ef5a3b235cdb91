import contextlib

from django.utils.translation import gettext_lazy as _
from horizon import exceptions, tabs

from xloud_dashboard.api import elastic
from xloud_dashboard.dashboards.admin.elastic_sizing import tables


class InstancesTab(tabs.TableTab):
    name = _("Instances")
    slug = 'instances'
    table_classes = (tables.InstancesTable,)
    template_name = 'horizon/common/_detail_table.html'
    preload = False

    def __init__(self, tab_group, request):
        super().__init__(tab_group, request)
        self._has_more = False

    def get_instances_data(self) -> list[elastic.InstanceSize]:
        table = self._tables['instances']
        marker = self.request.GET.get(table._meta.pagination_param)
        filters = {}
        field = table.get_filter_field()
        value = table.get_filter_string().strip()
        if field and value:
            filters[field] = value
        try:
            # Readiness, utilisation and recommendations come with the
            # page's one list call (an older extension: without them).
            sizes, self._has_more = elastic.instance_size_list(
                self.request, marker=marker, filters=filters,
                readiness=True)
        except elastic.ApiError:
            self._has_more = False
            exceptions.handle(self.request,
                              _("Unable to retrieve instance sizes."))
            return []
        # One call for the page: which instances Nova has locked. When it
        # fails their Adjust is offered; the form's clean() and the
        # extension refuse a locked one.
        with contextlib.suppress(elastic.ApiError):
            sizes = elastic.with_lock_states(self.request, sizes)
        if 'sync' in table.columns:
            # One audit call for the page, not one per row.
            audited = elastic.with_sync_states(self.request, sizes)
            if audited is None:
                table.hide_sync()
            else:
                sizes = audited
        return sizes

    def has_more_data(self, table) -> bool:
        return self._has_more


class FlavorsTab(tabs.TableTab):
    name = _("Flavors")
    slug = 'flavors'
    table_classes = (tables.FlavorsTable,)
    template_name = 'horizon/common/_detail_table.html'
    preload = False

    def get_flavors_data(self) -> list[elastic.Flavor]:
        try:
            flavors = elastic.flavor_list(self.request)
        except elastic.ApiError:
            exceptions.handle(self.request, _("Unable to retrieve flavors."))
            return []
        return sorted(flavors, key=lambda flavor: flavor.name)


class HostExposureTab(tabs.TableTab):
    """Per compute host: capacity, allocation and what a full burst of its
    elastic instances would need; a chart above the table of the same
    numbers."""

    name = _("Host Exposure")
    slug = 'host_exposure'
    table_classes = (tables.HostExposureTable,)
    template_name = 'admin/elastic_sizing/_host_exposure.html'
    preload = False
    policy_rules = tables.HOST_EXPOSURE_POLICY

    def __init__(self, tab_group, request):
        super().__init__(tab_group, request)
        self._errors: tuple[str, ...] = ()

    def get_host_exposure_data(self) -> list[elastic.HostExposure]:
        try:
            hosts, self._errors = elastic.host_exposure_list(self.request)
        except elastic.ApiError:
            exceptions.handle(self.request,
                              _("Unable to retrieve the host exposure."))
            return []
        return hosts

    def get_context_data(self, request, **kwargs) -> dict:
        context = super().get_context_data(request, **kwargs)
        hosts = self._tables['host_exposure'].data
        context['errors'] = self._errors
        context['chart_data'] = [
            {'host': host.name, 'over_capacity': host.over_capacity,
             **{key: {'capacity': dimension.capacity,
                      'allocated': dimension.allocated,
                      'headroom': dimension.headroom,
                      'over_capacity': dimension.over_capacity}
                for key, dimension in (('vcpus', host.vcpus),
                                       ('memory_mb', host.memory_mb))
                if dimension is not None}}
            for host in hosts if not host.error]
        return context


class ElasticSizingTabs(tabs.TabGroup):
    slug = 'elastic_sizing'
    tabs = (InstancesTab, FlavorsTab, HostExposureTab)
    sticky = True
