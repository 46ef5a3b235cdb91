import dataclasses

from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, pgettext_lazy
from horizon import forms, messages

from xloud_dashboard.api import elastic
from xloud_dashboard.dashboards.admin.elastic_sizing.tables import (
    AUTOSIZE_NAMES,
    DIMENSION_NAMES,
    MEMORY_MODEL_NAMES,
    autopilot_setting_text,
    dimensions_text,
    memory,
)

MODE_ABSOLUTE = 'absolute'
MODE_RELATIVE = 'relative'
# Each instance its own recommendation (the extension's, from what it
# uses).
MODE_RECOMMENDED = 'recommended'
OUT_OF_LIMITS_CLAMP = 'clamp'
OUT_OF_LIMITS_REFUSE = 'refuse'


def limit_field(field: forms.IntegerField, minimum: int, maximum: int):
    """Bound an integer field once the limits are known (per instance)."""
    field.min_value, field.max_value = minimum, maximum
    field.validators.extend(forms.IntegerField(
        min_value=minimum, max_value=maximum).validators)
    field.widget.attrs.update({'min': minimum, 'max': maximum})
    field.help_text = _("From %(minimum)s to %(maximum)s.") % {
        'minimum': minimum, 'maximum': maximum}


def fix_field(field: forms.IntegerField, reason: str) -> None:
    """Show a dimension that cannot be adjusted, and why; not sent."""
    field.disabled = True
    field.required = False
    field.help_text = reason


DIMENSIONS = (('vcpus', elastic.VCPUS), ('memory_mb', elastic.MEMORY))


def memory_blocks_refusal(size: elastic.InstanceSize,
                          memory_mb: int) -> str | None:
    """The extension's refusal (``nova_ext.api.controller``) of a memory
    size that is not whole blocks for a virtio-mem instance, or None."""
    block = elastic.VIRTIO_MEM_BLOCK_MB
    if (size.flavor.memory_model != elastic.MEMORY_MODEL_VIRTIO_MEM or
            not memory_mb % block):
        return None
    return _("current_memory_mb %(memory)d is not a multiple of %(block)d "
             "MiB: the server's flavor plugs memory in blocks of %(block)d "
             "MiB (%(key)s=%(model)s).") % {
        'memory': memory_mb, 'block': block, 'key': elastic.MEMORY_MODEL,
        'model': elastic.MEMORY_MODEL_VIRTIO_MEM}


class AdjustForm(forms.SelfHandlingForm):
    instance_id = forms.CharField(widget=forms.HiddenInput())
    vcpus = forms.IntegerField(label=_("vCPUs"))
    memory_mb = forms.IntegerField(label=_("Memory (MB)"))
    persist = forms.BooleanField(
        label=_("Keep after reboot"), required=False, initial=True,
        help_text=_("Also make this the size the instance boots with; "
                    "otherwise a reboot returns it to its boot size."))

    def __init__(self, request, *args, size: elastic.InstanceSize,
                 **kwargs):
        super().__init__(request, *args, **kwargs)
        self.size = size
        limits = {elastic.VCPUS: (size.min_vcpus, size.max_vcpus),
                  elastic.MEMORY: (size.min_memory_mb, size.max_memory_mb)}
        for name, dimension in DIMENSIONS:
            field = self.fields[name]
            reason = size.fixed_reason(dimension)
            if reason:
                fix_field(field, reason)
                continue
            limit_field(field, *limits[dimension])
            recommended = size.recommended(dimension)
            if recommended is not None:
                # The view fills the recommendation in; the rule says
                # how it was reached.
                field.help_text = _("Recommended: %(rule)s %(range)s") % {
                    'rule': (size.recommendation.rule(dimension) or
                             recommended),
                    'range': field.help_text}

    def clean(self):
        """Refuse, with the extension's reason, what it would refuse now.

        The instance is read again (its size, and Nova's lock): it may
        have been locked, started another operation, or had new flavor
        minimums applied since the form was shown.
        """
        data = super().clean()
        size = self.size
        try:
            fresh = elastic.with_lock_state(
                self.request, elastic.instance_size_get(self.request,
                                                        size.id))
        except elastic.ApiError as exc:
            raise forms.ValidationError(
                _('Unable to read instance "%(name)s": %(reason)s')
                % {'name': size.name, 'reason': exc.message})
        self.size = fresh
        refusal = fresh.adjust_refusal()
        if refusal is not None:
            raise forms.ValidationError(
                _('Instance "%(name)s" cannot be adjusted: %(reason)s')
                % {'name': fresh.name, 'reason': refusal})
        limits = {elastic.VCPUS: (fresh.min_vcpus, fresh.max_vcpus),
                  elastic.MEMORY: (fresh.min_memory_mb,
                                   fresh.max_memory_mb)}
        for name, dimension in DIMENSIONS:
            if self.fields[name].disabled:
                data[name] = None
                continue
            reason = fresh.fixed_reason(dimension)
            if reason:
                self.add_error(name, reason)
                continue
            low, high = limits[dimension]
            value = data.get(name)
            if value is not None and not low <= value <= high:
                self.add_error(name, _(
                    "From %(minimum)s to %(maximum)s now.") % {
                    'minimum': low, 'maximum': high})
            elif value is not None and dimension == elastic.MEMORY:
                misfit = memory_blocks_refusal(fresh, value)
                if misfit is not None:
                    self.add_error(name, misfit)
        return data

    def handle(self, request, data):
        size = self.size
        try:
            elastic.adjust(request, size.id, vcpus=data['vcpus'],
                           memory_mb=data['memory_mb'],
                           persist=data['persist'])
        except elastic.ApiError as exc:
            self.api_error(
                _('Unable to adjust instance "%(name)s": %(reason)s')
                % {'name': size.name, 'reason': exc.message})
            return False
        vcpus = size.current_vcpus if data['vcpus'] is None else data['vcpus']
        memory_mb = (size.current_memory_mb if data['memory_mb'] is None
                     else data['memory_mb'])
        messages.success(
            request,
            _('Adjusting instance "%(name)s" to %(vcpus)s vCPUs and '
              '%(memory)s.') % {'name': size.name, 'vcpus': vcpus,
                                'memory': memory(memory_mb)})
        return True


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a bulk adjustment does to one instance."""

    size: elastic.InstanceSize
    # None: a dimension that cannot be adjusted, left alone (not sent).
    vcpus: int | None
    memory_mb: int | None
    clamped: bool = False
    refused: str | None = None

    @property
    def unchanged(self) -> bool:
        return (self.vcpus in (None, self.size.current_vcpus)
                and self.memory_mb in (None, self.size.current_memory_mb))

    def describe(self) -> str:
        size = self.size
        parts = []
        if self.vcpus is not None:
            parts.append(_("%(old)s → %(new)s vCPUs") % {
                'old': size.current_vcpus, 'new': self.vcpus})
        if self.memory_mb is not None:
            parts.append(_("%(old)s → %(new)s") % {
                'old': memory(size.current_memory_mb),
                'new': memory(self.memory_mb)})
        text = _("%(name)s: %(changes)s") % {
            'name': size.name,
            'changes': ', '.join(str(part) for part in parts)}
        if self.clamped:
            text = _("%(change)s (held to the flavor's limits)") % {
                'change': text}
        return str(text)


def plan_recommended(size: elastic.InstanceSize) -> Plan:
    """The instance's own recommendation, in the dimensions it has one
    for and can be adjusted in (the others left alone); refused when it
    cannot be adjusted, or has no recommendation."""
    refusal = size.adjust_refusal()
    if refusal is not None:
        return Plan(size, None, None, refused=str(
            _("%(name)s: %(reason)s") % {'name': size.name,
                                         'reason': refusal}))
    vcpus = size.recommended(elastic.VCPUS)
    memory_mb = size.recommended(elastic.MEMORY)
    if vcpus is None and memory_mb is None:
        return Plan(size, None, None, refused=str(
            _("%(name)s: no recommendation, left alone") % {
                'name': size.name}))
    return Plan(size, vcpus, memory_mb)


def plan_adjustment(size: elastic.InstanceSize, *, mode: str,
                    vcpus: int | None, memory_mb: int | None,
                    out_of_limits: str) -> Plan:
    """The size one instance gets, held within its own limits.

    In relative mode ``vcpus``/``memory_mb`` are steps added to the
    current size. A value outside ``[min, max]`` is clamped to the nearest
    limit or refuses the whole instance, as ``out_of_limits`` says; so is
    a change of a dimension that cannot be adjusted (held: left alone).
    An instance that cannot be adjusted at all is refused.
    """
    def target(current: int, value: int | None) -> int:
        if value is None:
            return current
        return current + value if mode == MODE_RELATIVE else value

    refusal = size.adjust_refusal()
    if refusal is not None:
        return Plan(size, None, None, refused=str(
            _("%(name)s: %(reason)s") % {'name': size.name,
                                         'reason': refusal}))
    wanted = {'vcpus': target(size.current_vcpus, vcpus),
              'memory_mb': target(size.current_memory_mb, memory_mb)}
    asked = {'vcpus': vcpus is not None, 'memory_mb': memory_mb is not None}
    limits = {'vcpus': (size.min_vcpus, size.max_vcpus),
              'memory_mb': (size.min_memory_mb, size.max_memory_mb)}
    labels = {'vcpus': _("vCPUs"), 'memory_mb': _("memory (MB)")}
    held = {}
    clamped = False
    for key, dimension in DIMENSIONS:
        value = wanted[key]
        reason = size.fixed_reason(dimension)
        if reason:
            if asked[key] and value != getattr(size, f'current_{key}'):
                if out_of_limits == OUT_OF_LIMITS_REFUSE:
                    return Plan(size, None, None, refused=str(
                        _("%(name)s: %(reason)s") % {
                            'name': size.name, 'reason': reason}))
                clamped = True
            held[key] = None
            continue
        low, high = limits[key]
        inside = min(max(value, low), high)
        if inside != value:
            if out_of_limits == OUT_OF_LIMITS_REFUSE:
                reason = _("%(name)s: %(value)s %(what)s is outside its "
                           "limits %(low)s to %(high)s") % {
                    'name': size.name, 'value': value, 'what': labels[key],
                    'low': low, 'high': high}
                return Plan(size, size.current_vcpus,
                            size.current_memory_mb, refused=str(reason))
            clamped = True
        held[key] = inside
    blocks = (None if held['memory_mb'] is None
              else memory_blocks_refusal(size, held['memory_mb']))
    if blocks is not None:
        # The API would refuse it in the same words; no request is sent.
        return Plan(size, size.current_vcpus, size.current_memory_mb,
                    refused=str(_("%(name)s: %(reason)s") % {
                        'name': size.name, 'reason': blocks}))
    return Plan(size, held['vcpus'], held['memory_mb'], clamped=clamped)


class BulkAdjustForm(forms.SelfHandlingForm):
    instance_ids = forms.CharField(widget=forms.HiddenInput())
    mode = forms.ChoiceField(
        label=_("Change"),
        choices=((MODE_ABSOLUTE, _("Set the size")),
                 (MODE_RELATIVE, _("Add or remove a step")),
                 (MODE_RECOMMENDED,
                  _("Apply the recommended size to each instance"))),
        initial=MODE_ABSOLUTE,
        widget=forms.ThemableSelectWidget(attrs={
            'class': 'switchable', 'data-slug': 'mode'}))
    vcpus = forms.IntegerField(
        label=_("vCPUs"), required=False, min_value=1,
        widget=forms.NumberInput(attrs={
            'class': 'switched', 'data-switch-on': 'mode',
            'data-mode-absolute': _("vCPUs")}))
    memory_mb = forms.IntegerField(
        label=_("Memory (MB)"), required=False, min_value=1,
        widget=forms.NumberInput(attrs={
            'class': 'switched', 'data-switch-on': 'mode',
            'data-mode-absolute': _("Memory (MB)")}))
    vcpus_step = forms.IntegerField(
        label=_("vCPU step"), required=False,
        help_text=_("For example 1 or -1."),
        widget=forms.NumberInput(attrs={
            'class': 'switched', 'data-switch-on': 'mode',
            'data-mode-relative': _("vCPU step")}))
    memory_step = forms.IntegerField(
        label=_("Memory step (MB)"), required=False,
        help_text=_("For example 1024 or -1024."),
        widget=forms.NumberInput(attrs={
            'class': 'switched', 'data-switch-on': 'mode',
            'data-mode-relative': _("Memory step (MB)")}))
    out_of_limits = forms.ChoiceField(
        label=_("Outside an instance's limits"),
        choices=((OUT_OF_LIMITS_CLAMP,
                  _("Hold it to the nearest limit")),
                 (OUT_OF_LIMITS_REFUSE, _("Leave that instance alone"))),
        initial=OUT_OF_LIMITS_CLAMP, widget=forms.ThemableSelectWidget())
    persist = forms.BooleanField(label=_("Keep after reboot"),
                                 required=False, initial=True)

    def clean(self):
        data = super().clean()
        if data.get('mode') == MODE_RECOMMENDED:
            vcpus = memory_mb = None
        elif data.get('mode') == MODE_RELATIVE:
            vcpus, memory_mb = data.get('vcpus_step'), data.get('memory_step')
            if not vcpus and not memory_mb:
                raise forms.ValidationError(
                    _("Give a non-zero vCPU or memory step."))
        else:
            vcpus, memory_mb = data.get('vcpus'), data.get('memory_mb')
            if vcpus is None and memory_mb is None:
                raise forms.ValidationError(
                    _("Give a number of vCPUs, an amount of memory or "
                      "both."))
        data['change'] = (vcpus or None, memory_mb or None)
        data['ids'] = [value for value in data.get('instance_ids', '')
                       .split(',') if value]
        if not data['ids']:
            raise forms.ValidationError(_("Select at least one instance."))
        return data

    def handle(self, request, data):
        vcpus, memory_mb = data['change']
        sizes = elastic.instance_sizes_get(request, data['ids'])
        problems = []
        plans = []
        for server_id, size in sizes.items():
            if isinstance(size, elastic.ApiError):
                problems.append(_("%(id)s: %(reason)s") % {
                    'id': server_id, 'reason': size.message})
                continue
            if data['mode'] == MODE_RECOMMENDED:
                plan = plan_recommended(size)
            else:
                plan = plan_adjustment(size, mode=data['mode'], vcpus=vcpus,
                                       memory_mb=memory_mb,
                                       out_of_limits=data['out_of_limits'])
            if plan.refused:
                problems.append(plan.refused)
            elif plan.unchanged:
                problems.append((
                    _("%(name)s: already at its recommendation")
                    if data['mode'] == MODE_RECOMMENDED else
                    _("%(name)s: already at that size")) % {
                    'name': size.name})
            else:
                plans.append(plan)
        outcomes = elastic.adjust_many(request, [
            elastic.AdjustRequest(plan.size.id, plan.vcpus, plan.memory_mb,
                                  data['persist']) for plan in plans]
        ) if plans else []
        accepted = []
        for plan, outcome in zip(plans, outcomes, strict=True):
            if outcome.accepted:
                accepted.append(plan.describe())
            else:
                problems.append(_("%(name)s: %(reason)s") % {
                    'name': plan.size.name, 'reason': outcome.error})
        problem_text = '; '.join(str(problem) for problem in problems)
        if not accepted:
            self.api_error(_("No instance was adjusted: %(problems)s")
                           % {'problems': problem_text})
            return False
        messages.success(request, ngettext(
            "Adjusting %(count)d instance: %(changes)s",
            "Adjusting %(count)d instances: %(changes)s",
            len(accepted)) % {'count': len(accepted),
                              'changes': '; '.join(accepted)})
        if problems:
            messages.warning(request, ngettext(
                "%(count)d instance was not adjusted: %(problems)s",
                "%(count)d instances were not adjusted: %(problems)s",
                len(problems)) % {'count': len(problems),
                                  'problems': problem_text})
        return True


def virtio_mem_misfit(name: str) -> str:
    """Nova's refusal (``nova_ext.api.filter``) of a size that is not
    whole virtio-mem blocks; ``name`` says which."""
    return _('Validation failed; %(name)s is not a multiple of %(block)d '
             'MiB: %(key)s=%(model)s plugs memory in blocks of %(block)d '
             'MiB.') % {'name': name, 'block': elastic.VIRTIO_MEM_BLOCK_MB,
                        'key': elastic.MEMORY_MODEL,
                        'model': elastic.MEMORY_MODEL_VIRTIO_MEM}


# The Autopilot Setting form's choices: what it sizes (None: what the
# flavor says) and the mode the instance is held to (None: its host's).
FOLLOW_FLAVOR = 'flavor'
SIZE_NOTHING = 'none'
SIZE_MEMORY = 'memory'
SIZE_VCPUS = 'cpu'
SIZE_BOTH = 'both'
SIZED_DIMENSIONS: dict[str, tuple[str, ...] | None] = {
    FOLLOW_FLAVOR: None,
    SIZE_NOTHING: (),
    SIZE_MEMORY: (elastic.MEMORY,),
    SIZE_VCPUS: (elastic.VCPUS,),
    SIZE_BOTH: (elastic.VCPUS, elastic.MEMORY),
}
HOST_MODE = 'host'
# What each xloud:autosize value of the minimums editor sizes.
AUTOSIZE_DIMENSIONS = {
    elastic.AUTOSIZE_NONE: (),
    elastic.AUTOSIZE_MEMORY: (elastic.MEMORY,),
    elastic.AUTOSIZE_CPU: (elastic.VCPUS,),
    elastic.AUTOSIZE_BOTH: (elastic.VCPUS, elastic.MEMORY),
}


def sized_choice(setting: elastic.AutopilotSetting) -> str:
    """The choice that gives an instance's setting back."""
    if setting.dimensions_from != elastic.DIMENSIONS_FROM_INSTANCE:
        return FOLLOW_FLAVOR
    wanted = set(setting.dimensions)
    return next(choice for choice, dimensions in SIZED_DIMENSIONS.items()
                if dimensions is not None and set(dimensions) == wanted)


class AutopilotForm(forms.SelfHandlingForm):
    instance_id = forms.CharField(widget=forms.HiddenInput())
    dimensions = forms.ChoiceField(
        label=_("Sizes"),
        choices=((FOLLOW_FLAVOR, _("What its flavor says (xloud:autosize)")),
                 (SIZE_NOTHING, pgettext_lazy("Autopilot sizes",
                                              "Nothing")),
                 (SIZE_MEMORY, pgettext_lazy("Autopilot sizes", "Memory")),
                 (SIZE_VCPUS, pgettext_lazy("Autopilot sizes", "vCPUs")),
                 (SIZE_BOTH, pgettext_lazy("Autopilot sizes",
                                           "Memory and vCPUs"))),
        initial=FOLLOW_FLAVOR, widget=forms.ThemableSelectWidget())
    mode = forms.ChoiceField(
        label=_("Mode"),
        choices=((HOST_MODE, _("Its compute host's")),
                 (elastic.AUTOPILOT_OFF, _("Off: leave it alone")),
                 (elastic.AUTOPILOT_RECOMMEND,
                  _("At most recommend: say what it would do")),
                 (elastic.AUTOPILOT_ON,
                  _("On: adjust it, where its host runs on"))),
        initial=HOST_MODE, widget=forms.ThemableSelectWidget())

    def __init__(self, request, *args, size: elastic.InstanceSize,
                 **kwargs):
        super().__init__(request, *args, **kwargs)
        self.size = size

    def clean(self):
        """Refuse, with the extension's reason, a dimension it would refuse
        (409: its flavor, image or devices keep it fixed), read again: the
        instance may have been resized or rebuilt since the form was
        shown."""
        data = super().clean()
        choice = data.get('dimensions')
        if choice is None:
            return data
        data['sized'] = SIZED_DIMENSIONS[choice]
        data['held_mode'] = (None if data.get('mode') in (None, HOST_MODE)
                             else data['mode'])
        try:
            fresh = elastic.instance_size_get(self.request, self.size.id)
        except elastic.ApiError as exc:
            raise forms.ValidationError(
                _('Unable to read instance "%(name)s": %(reason)s')
                % {'name': self.size.name, 'reason': exc.message})
        self.size = fresh
        if fresh.autopilot is None:
            raise forms.ValidationError(_(
                "The cloud's elastic sizing extension has no autopilot."))
        for dimension in data['sized'] or ():
            reason = fresh.not_adjustable.get(dimension)
            if reason:
                self.add_error('dimensions', _(
                    '%(what)s of instance "%(name)s" cannot be sized '
                    'automatically: %(reason)s') % {
                    'what': DIMENSION_NAMES[dimension], 'name': fresh.name,
                    'reason': reason})
        return data

    def handle(self, request, data):
        size = self.size
        try:
            setting = elastic.autopilot_set(request, size.id, data['sized'],
                                            data['held_mode'])
        except elastic.ApiError as exc:
            self.api_error(
                _('Unable to set the autopilot of instance "%(name)s": '
                  '%(reason)s') % {'name': size.name, 'reason': exc.message})
            return False
        messages.success(request, _(
            'Autopilot of instance "%(name)s": %(setting)s') % {
            'name': size.name, 'setting': autopilot_setting_text(setting)})
        return True


class EditMinimumsForm(forms.SelfHandlingForm):
    flavor_id = forms.CharField(widget=forms.HiddenInput())
    minimum_cpu = forms.IntegerField(
        label=_("Minimum vCPUs"), required=False, min_value=1)
    minimum_memory = forms.IntegerField(
        label=_("Minimum memory (MB)"), required=False, min_value=1)
    memory_model = forms.ChoiceField(
        label=_("Memory method"),
        choices=tuple(MEMORY_MODEL_NAMES.items()),
        initial=elastic.MEMORY_MODEL_BALLOON,
        widget=forms.ThemableSelectWidget(),
        help_text=_("Balloon: the guest boots with the flavor's RAM and a "
                    "balloon holds back what it is not given. virtio-mem: "
                    "the guest boots with the minimum memory, and blocks "
                    "of 2 MiB are plugged and unplugged up to the flavor's "
                    "RAM; the RAM and the minimum must be multiples of 2 "
                    "MiB. An existing instance gets a new method once the "
                    "flavor's settings are applied to it and its domain is "
                    "generated again (hard reboot, cold migration, "
                    "unshelve), or when it is resized."))
    autosize = forms.ChoiceField(
        label=_("Autopilot sizes"),
        choices=((elastic.AUTOSIZE_NONE,
                  pgettext_lazy("Autosize", "Nothing")),
                 *AUTOSIZE_NAMES.items()),
        initial=elastic.AUTOSIZE_NONE, required=False,
        widget=forms.ThemableSelectWidget(),
        help_text=_("What the autopilot sizes of the flavor's instances, "
                    "within their minimum and maximum (extra spec "
                    "xloud:autosize; Nothing removes it). What it does is "
                    "each compute host's mode (off, recommend, on); an "
                    "instance's own Autopilot Setting overrides it."))

    def __init__(self, request, *args, flavor: elastic.Flavor,
                 memory_floor_mb: int = elastic.DEFAULT_MEMORY_FLOOR_MB,
                 **kwargs):
        super().__init__(request, *args, **kwargs)
        self.flavor = flavor
        limit_field(self.fields['minimum_cpu'], 1, flavor.vcpus)
        # The extension refuses a memory minimum below its floor.
        limit_field(self.fields['minimum_memory'], memory_floor_mb,
                    flavor.memory_mb)
        for name in ('minimum_cpu', 'minimum_memory'):
            self.fields[name].help_text = _(
                "%(range)s Leave empty to remove the minimum.") % {
                'range': self.fields[name].help_text}

    def clean(self):
        """Refuse what Nova's API would refuse of virtio-mem: a flavor
        RAM or a minimum memory that is not whole blocks.

        The flavor is the one the view read for this request, its RAM as
        Nova holds it now; the API checks again when the specs are
        written.
        """
        data = super().clean()
        if data.get('memory_model') != elastic.MEMORY_MODEL_VIRTIO_MEM:
            return data
        block = elastic.VIRTIO_MEM_BLOCK_MB
        if self.flavor.memory_mb % block:
            self.add_error('memory_model',
                           virtio_mem_misfit(_("the flavor's ram")))
        minimum = data.get('minimum_memory')
        if minimum is not None and minimum % block:
            self.add_error('minimum_memory', virtio_mem_misfit(
                f'{elastic.MINIMUM_MEMORY}={minimum}'))
        return data

    def handle(self, request, data):
        flavor = self.flavor
        try:
            elastic.flavor_set_minimums(
                request, flavor.id, minimum_cpu=data['minimum_cpu'],
                minimum_memory=data['minimum_memory'],
                memory_model=data['memory_model'],
                autosize=data.get('autosize') or None)
        except elastic.ApiError as exc:
            self.api_error(
                _('Unable to update the minimums of flavor "%(name)s": '
                  '%(reason)s') % {'name': flavor.name,
                                   'reason': exc.message})
            return False
        if data['memory_model'] != flavor.memory_model:
            messages.info(request, _(
                'Instances of flavor "%(name)s" booted or resized from now '
                'on use the memory method %(method)s; an existing one gets '
                'it once the flavor\'s settings are applied to it and its '
                'domain is generated again (hard reboot, cold migration, '
                'unshelve).') % {
                'name': flavor.name,
                'method': MEMORY_MODEL_NAMES[data['memory_model']]})
        autosize = data.get('autosize')
        if autosize and autosize != (flavor.autosize or
                                     elastic.AUTOSIZE_NONE):
            # The autopilot reads the flavor copy in each instance, which
            # applying the minimums does not carry this key into.
            messages.info(request, _(
                'The autopilot sizes %(what)s of the instances of flavor '
                '"%(name)s" booted or resized from now on; an existing '
                'instance keeps the flavor copy it booted with: give it '
                'its own Autopilot Setting.') % {
                'name': flavor.name,
                'what': dimensions_text(AUTOSIZE_DIMENSIONS[autosize])})
        updated = _('Updated the minimums of flavor "%(name)s".') % {
            'name': flavor.name}
        try:
            report = elastic.flavor_minimums_get(request, flavor.id)
        except elastic.ApiError:
            # A cloud without the flavor minimums API (or its policy):
            # nothing to say about the instances.
            messages.success(request, updated)
            return True
        existing = existing_instances_message(report)
        if report.stale:
            messages.success(request, updated)
            messages.warning(request, format_html(
                '{} <a href="{}" class="btn btn-default btn-xs ajax-modal '
                'xloud-apply-minimums">{}</a>', existing,
                reverse('horizon:admin:elastic_sizing:apply_minimums',
                        args=[flavor.id]),
                _("Apply to Instances")))
        else:
            messages.success(request, f'{updated} {existing}')
        return True


def existing_instances_message(report: elastic.MinimumsReport) -> str:
    """How the flavor's existing instances stand against its minimums."""
    if not report.instances:
        return str(_("It has no instances."))
    if not report.stale:
        return ngettext(
            "Its instance carries them.",
            "All %(count)d of its instances carry them.",
            report.instances) % {'count': report.instances}
    text = ngettext(
        "%(stale)d of its %(count)d instance carries other minimums or "
        "another memory method and keeps them until the flavor's are "
        "applied to it.",
        "%(stale)d of its %(count)d instances carry other minimums or "
        "another memory method and keep them until the flavor's are "
        "applied to them.",
        report.instances) % {'stale': report.stale,
                             'count': report.instances}
    if report.busy:
        text += ' ' + ngettext(
            "%(busy)d of them has an operation in progress.",
            "%(busy)d of them have an operation in progress.",
            report.busy) % {'busy': report.busy}
    return text


class ApplyMinimumsForm(forms.SelfHandlingForm):
    flavor_id = forms.CharField(widget=forms.HiddenInput())

    def __init__(self, request, *args, flavor: elastic.Flavor, **kwargs):
        super().__init__(request, *args, **kwargs)
        self.flavor = flavor

    def handle(self, request, data):
        flavor = self.flavor
        try:
            report = elastic.flavor_minimums_apply(request, flavor.id)
        except elastic.ApiError as exc:
            self.api_error(
                _('Unable to apply the minimums of flavor "%(name)s": '
                  '%(reason)s') % {'name': flavor.name,
                                   'reason': exc.message})
            return False
        if report.updated:
            messages.success(request, ngettext(
                'Applied the minimums of flavor "%(name)s" to %(count)d '
                'instance.',
                'Applied the minimums of flavor "%(name)s" to %(count)d '
                'instances.', report.updated) % {
                'name': flavor.name, 'count': report.updated})
        elif not report.stale:
            messages.success(request, _(
                'Every instance of flavor "%(name)s" carries its '
                'minimums.') % {'name': flavor.name})
        by_result = {}
        for outcome in report.servers:
            by_result.setdefault(outcome.result, []).append(outcome)
        busy = by_result.get('busy', [])
        if busy:
            messages.warning(request, ngettext(
                '%(count)d instance has an operation in progress and keeps '
                'its minimums; apply again once it has ended: %(ids)s',
                '%(count)d instances have an operation in progress and keep '
                'their minimums; apply again once they have ended: %(ids)s',
                len(busy)) % {'count': len(busy), 'ids': ', '.join(
                    outcome.server_id for outcome in busy)})
        below = [outcome for outcome in report.servers
                 if outcome.result == 'updated' and outcome.below_minimum]
        if below:
            messages.warning(request, ngettext(
                '%(count)d instance runs below the new minimums and keeps '
                'running as it is; adjust it: %(ids)s',
                '%(count)d instances run below the new minimums and keep '
                'running as they are; adjust them: %(ids)s',
                len(below)) % {'count': len(below), 'ids': ', '.join(
                    outcome.server_id for outcome in below)})
        failures = [_("%(id)s: %(reason)s") % {
                        'id': outcome.server_id, 'reason': outcome.message}
                    for outcome in by_result.get('error', [])]
        failures += list(report.errors)
        if failures:
            messages.error(request, _(
                'Not applied: %(failures)s') % {
                'failures': '; '.join(str(failure) for failure in failures)})
        return True
