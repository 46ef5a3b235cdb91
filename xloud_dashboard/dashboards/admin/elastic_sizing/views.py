from django import shortcuts
from django.urls import reverse, reverse_lazy
from django.utils.translation import gettext_lazy as _
from horizon import exceptions, forms, messages, tables, tabs
from horizon.utils import memoized

from xloud_dashboard.api import elastic
from xloud_dashboard.dashboards.admin.elastic_sizing import forms as es_forms
from xloud_dashboard.dashboards.admin.elastic_sizing import tables as es_tables
from xloud_dashboard.dashboards.admin.elastic_sizing import tabs as es_tabs

INDEX_URL = reverse_lazy('horizon:admin:elastic_sizing:index')


class IndexView(tabs.TabbedTableView):
    tab_group_class = es_tabs.ElasticSizingTabs
    template_name = 'admin/elastic_sizing/index.html'
    page_title = _("Elastic Sizing")

    def post(self, request, *args, **kwargs):
        # A new server-side filter starts again from the first page.
        tab = self.get_tabs(request, **kwargs).get_tab('instances')
        if self.handle_server_filter(request,
                                     table=tab._tables['instances']):
            return shortcuts.redirect(request.path)
        return super().post(request, *args, **kwargs)


class ObjectModalFormView(forms.ModalFormView):
    """A modal form about the one object the URL names.

    Subclasses say which URL argument names it (``url_kwarg``), under which
    name the template and the form receive it (``object_name``), and fetch
    it in a memoized ``get_object``.
    """

    url_kwarg: str
    object_name: str

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context[self.object_name] = self.get_object()
        context['submit_url'] = reverse(self.submit_url,
                                        args=[self.kwargs[self.url_kwarg]])
        return context

    def get_form_kwargs(self):
        kwargs = super().get_form_kwargs()
        kwargs[self.object_name] = self.get_object()
        return kwargs


class InstanceSizeModalFormView(ObjectModalFormView):
    """A modal form about one instance's size, named by ``instance_id``."""

    url_kwarg = 'instance_id'
    object_name = 'size'

    @memoized.memoized_method
    def get_object(self) -> elastic.InstanceSize:
        try:
            return elastic.instance_size_get(self.request,
                                             self.kwargs['instance_id'])
        except elastic.ApiError:
            exceptions.handle(self.request,
                              _("Unable to retrieve the instance's size."),
                              redirect=INDEX_URL)


class AdjustView(InstanceSizeModalFormView):
    form_class = es_forms.AdjustForm
    template_name = 'admin/elastic_sizing/adjust.html'
    modal_id = 'adjust_instance_modal'
    page_title = _("Adjust Instance Size")
    submit_label = _("Adjust")
    submit_url = 'horizon:admin:elastic_sizing:adjust'
    success_url = INDEX_URL

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        size = self.get_object()
        context['recommended'] = any(
            size.recommended(dimension) is not None
            for dimension in (elastic.VCPUS, elastic.MEMORY))
        return context

    def get_initial(self):
        """The current size, or the recommendation where the instance has
        one for a dimension it can be adjusted in."""
        size = self.get_object()
        vcpus = size.recommended(elastic.VCPUS)
        memory_mb = size.recommended(elastic.MEMORY)
        return {'instance_id': size.id,
                'vcpus': size.current_vcpus if vcpus is None else vcpus,
                'memory_mb': (size.current_memory_mb if memory_mb is None
                              else memory_mb),
                'persist': True}


class AutopilotView(InstanceSizeModalFormView):
    form_class = es_forms.AutopilotForm
    template_name = 'admin/elastic_sizing/autopilot_setting.html'
    modal_id = 'autopilot_setting_modal'
    page_title = _("Autopilot Setting")
    submit_label = _("Save")
    submit_url = 'horizon:admin:elastic_sizing:autopilot'
    success_url = INDEX_URL

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        autopilot = self.get_object().autopilot
        context['autosize_key'] = elastic.AUTOSIZE
        context['autopilot'] = autopilot
        if autopilot is not None:
            context['setting_text'] = es_tables.autopilot_setting_text(
                autopilot.setting)
            context['host_mode'] = es_tables.autopilot_mode_name(
                autopilot.host_mode)
            context['mode'] = es_tables.autopilot_mode_name(autopilot.mode)
        return context

    def get_initial(self):
        size = self.get_object()
        initial = {'instance_id': size.id}
        if size.autopilot is not None:
            setting = size.autopilot.setting
            initial['dimensions'] = es_forms.sized_choice(setting)
            initial['mode'] = setting.instance_mode or es_forms.HOST_MODE
        return initial


class BulkAdjustView(forms.ModalFormView):
    form_class = es_forms.BulkAdjustForm
    template_name = 'admin/elastic_sizing/bulk_adjust.html'
    modal_id = 'bulk_adjust_modal'
    page_title = _("Adjust Selected Instances")
    submit_label = _("Adjust")
    submit_url = reverse_lazy('horizon:admin:elastic_sizing:bulk_adjust')
    success_url = INDEX_URL

    def _instance_ids(self) -> list[str]:
        source = self.request.POST if self.request.method == 'POST' \
            else self.request.GET
        ids = source.getlist('id')
        if not ids:
            ids = [value for value in
                   source.get('instance_ids', '').split(',') if value]
        return ids

    def get(self, request, *args, **kwargs):
        if not self._instance_ids():
            messages.error(request, _("Select at least one instance."))
            return shortcuts.redirect(INDEX_URL)
        return super().get(request, *args, **kwargs)

    def get_initial(self):
        return {'instance_ids': ','.join(self._instance_ids())}

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context['instance_count'] = len(self._instance_ids())
        return context


class EditMinimumsView(ObjectModalFormView):
    form_class = es_forms.EditMinimumsForm
    template_name = 'admin/elastic_sizing/edit_minimums.html'
    modal_id = 'edit_minimums_modal'
    page_title = _("Edit Flavor Minimums")
    submit_label = _("Save")
    submit_url = 'horizon:admin:elastic_sizing:edit_minimums'
    success_url = INDEX_URL
    url_kwarg = 'flavor_id'
    object_name = 'flavor'

    def get_success_url(self):
        return f'{self.success_url}?tab=elastic_sizing__flavors'

    @memoized.memoized_method
    def get_object(self) -> elastic.Flavor:
        try:
            return elastic.flavor_get(self.request, self.kwargs['flavor_id'])
        except elastic.ApiError:
            exceptions.handle(self.request,
                              _("Unable to retrieve the flavor."),
                              redirect=self.get_success_url())

    @memoized.memoized_method
    def get_report(self) -> elastic.MinimumsReport | None:
        """The flavor's instances and the cloud's memory floor; None when
        the cloud does not offer the flavor minimums API to this user."""
        try:
            return elastic.flavor_minimums_get(self.request,
                                               self.kwargs['flavor_id'])
        except elastic.ApiError:
            return None

    def memory_floor_mb(self) -> int:
        report = self.get_report()
        return (elastic.DEFAULT_MEMORY_FLOOR_MB if report is None
                else report.memory_floor_mb)

    def get_form_kwargs(self):
        kwargs = super().get_form_kwargs()
        kwargs['memory_floor_mb'] = self.memory_floor_mb()
        return kwargs

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context['memory_floor_mb'] = self.memory_floor_mb()
        return context

    def get_initial(self):
        flavor = self.get_object()
        return {'flavor_id': flavor.id, 'minimum_cpu': flavor.minimum_cpu,
                'minimum_memory': flavor.minimum_memory,
                'memory_model': flavor.memory_model,
                'autosize': flavor.autosize or elastic.AUTOSIZE_NONE}


class ApplyMinimumsView(ObjectModalFormView):
    form_class = es_forms.ApplyMinimumsForm
    template_name = 'admin/elastic_sizing/apply_minimums.html'
    modal_id = 'apply_minimums_modal'
    page_title = _("Apply Flavor Minimums to Instances")
    submit_label = _("Apply")
    submit_url = 'horizon:admin:elastic_sizing:apply_minimums'
    success_url = INDEX_URL
    url_kwarg = 'flavor_id'
    object_name = 'flavor'

    def get_success_url(self):
        return f'{self.success_url}?tab=elastic_sizing__flavors'

    @memoized.memoized_method
    def get_object(self) -> elastic.Flavor:
        try:
            return elastic.flavor_get(self.request, self.kwargs['flavor_id'])
        except elastic.ApiError:
            exceptions.handle(self.request,
                              _("Unable to retrieve the flavor."),
                              redirect=self.get_success_url())

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        if self.request.method == 'GET':
            try:
                context['report'] = elastic.flavor_minimums_get(
                    self.request, self.kwargs['flavor_id'])
            except elastic.ApiError:
                exceptions.handle(
                    self.request,
                    _("Unable to count the instances of the flavor."))
        return context

    def get_initial(self):
        return {'flavor_id': self.get_object().id}


class HistoryView(tables.DataTableView):
    table_class = es_tables.HistoryTable
    template_name = 'admin/elastic_sizing/history.html'
    page_title = _("Adjustment History of {{ size.name }}")

    @memoized.memoized_method
    def get_size(self) -> elastic.InstanceSize:
        try:
            return elastic.instance_size_get(self.request,
                                             self.kwargs['instance_id'])
        except elastic.ApiError:
            exceptions.handle(self.request,
                              _("Unable to retrieve the instance's size."),
                              redirect=INDEX_URL)

    def get_data(self) -> list[elastic.HistoryEntry]:
        try:
            # The header's single GET carries the change records: no
            # further call for them.
            return elastic.adjustment_history(
                self.request, self.kwargs['instance_id'],
                changes=self.get_size().changes)
        except elastic.ApiError:
            exceptions.handle(self.request,
                              _("Unable to retrieve the adjustment history."))
            return []

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        size = self.get_size()
        context['size'] = size
        context['url'] = INDEX_URL
        # The guest block and readiness of the same single GET.
        context.update(guest_context(size))
        return context


def guest_context(size: elastic.InstanceSize) -> dict:
    """What ``_guest.html`` shows of an instance: the guest's own view,
    and readiness with each dimension's verdict."""
    readiness = size.readiness
    if readiness is None:
        return {'readiness_checks': (), 'dimensions': ()}
    return {
        'readiness_checks': es_tables.readiness_checks(readiness),
        'virtio_mem_blocks': (
            None if readiness.virtio_mem is None
            else es_tables.virtio_mem_blocks(readiness.virtio_mem)),
        'dimensions': [
            {'name': dimension, 'label': label,
             'reason': size.fixed_reason(dimension)}
            for dimension, label in ((elastic.VCPUS, _("vCPUs")),
                                     (elastic.MEMORY, _("Memory")))],
    }
