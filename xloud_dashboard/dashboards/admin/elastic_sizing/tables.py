import contextlib
import dataclasses
from urllib import parse

from django import shortcuts
from django.template import loader
from django.template.defaultfilters import timesince
from django.urls import reverse
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext_lazy, pgettext_lazy
from horizon import messages, tables
from horizon.templatetags import sizeformat

from xloud_dashboard.api import elastic

ADJUST_POLICY = (('compute', 'xloud:elastic_sizing:adjust'),)
AUDIT_POLICY = (('compute', 'xloud:elastic_sizing:audit'),)
AUTOPILOT_POLICY = (('compute', 'xloud:elastic_sizing:autopilot'),)
FLAVOR_MINIMUMS_POLICY = (('compute',
                           'xloud:elastic_sizing:flavor_minimums'),)
EXTRA_SPECS_POLICY = (
    ('compute', 'os_compute_api:os-flavor-extra-specs:index'),
    ('compute', 'os_compute_api:os-flavor-extra-specs:create'),
    ('compute', 'os_compute_api:os-flavor-extra-specs:delete'),
)

# An adjustment in flight keeps the row refreshing (status None); a failed
# one, or one the guest did not take up, marks the row as failed.
ADJUSTMENT_STATUS_CHOICES = (
    (elastic.STATUS_ADJUSTING, None),
    (elastic.STATUS_SUCCESS, True),
    (elastic.STATUS_ERROR, False),
    (elastic.STATUS_PARTIAL, False),
    ('', True),
)
ADJUSTMENT_DISPLAY_CHOICES = (
    (elastic.STATUS_ADJUSTING, pgettext_lazy("Adjustment status",
                                             "Adjusting")),
    (elastic.STATUS_SUCCESS, pgettext_lazy("Adjustment status", "Done")),
    (elastic.STATUS_ERROR, pgettext_lazy("Adjustment status", "Failed")),
    (elastic.STATUS_PARTIAL, pgettext_lazy("Adjustment status",
                                           "Not in the guest")),
)
RESULT_STATUS_CHOICES = (
    ('success', True),
    ('error', False),
    ('', None),
)
RESULT_DISPLAY_CHOICES = (
    ('success', pgettext_lazy("Adjustment result", "Success")),
    ('error', pgettext_lazy("Adjustment result", "Error")),
    ('', pgettext_lazy("Adjustment result", "In progress")),
)


MEMORY_MODEL_NAMES = {
    elastic.MEMORY_MODEL_BALLOON: pgettext_lazy("Memory method", "Balloon"),
    elastic.MEMORY_MODEL_VIRTIO_MEM: pgettext_lazy("Memory method",
                                                   "virtio-mem"),
}


AUTOPILOT_MODE_NAMES = {
    elastic.AUTOPILOT_OFF: pgettext_lazy("Autopilot mode", "Off"),
    elastic.AUTOPILOT_RECOMMEND: pgettext_lazy("Autopilot mode",
                                               "Recommend"),
    elastic.AUTOPILOT_ON: pgettext_lazy("Autopilot mode", "On"),
}
DECISION_NAMES = {
    elastic.DECISION_GROW: pgettext_lazy("Autopilot decision", "grow"),
    elastic.DECISION_SHRINK: pgettext_lazy("Autopilot decision", "shrink"),
    elastic.DECISION_HOLD: pgettext_lazy("Autopilot decision", "hold"),
    elastic.DECISION_SKIPPED: pgettext_lazy("Autopilot decision",
                                            "skipped"),
}
DIMENSION_NAMES = {
    elastic.VCPUS: pgettext_lazy("Autopilot dimension", "vCPUs"),
    elastic.MEMORY: pgettext_lazy("Autopilot dimension", "memory"),
}
AUTOSIZE_NAMES = {
    elastic.AUTOSIZE_MEMORY: pgettext_lazy("Autosize", "Memory"),
    elastic.AUTOSIZE_CPU: pgettext_lazy("Autosize", "vCPUs"),
    elastic.AUTOSIZE_BOTH: pgettext_lazy("Autosize", "Memory and vCPUs"),
}
# How briefly a hold's reason shows in the Autopilot column (the
# tooltip has it in full).
HOLD_REASON_CHARS = 32


def memory(megabytes: int | None) -> str:
    if megabytes is None:
        return '-'
    return sizeformat.mb_float_format(megabytes)


def memory_model_name(model: str) -> str:
    return MEMORY_MODEL_NAMES.get(model, model)


def current_memory(size: elastic.InstanceSize) -> str:
    """The memory it has now; how it is adjusted in its tooltip."""
    return loader.render_to_string('admin/elastic_sizing/_memory.html', {
        'memory': memory(size.current_memory_mb),
        'model': size.flavor.memory_model,
        'method': _("Memory method: %s") % memory_model_name(
            size.flavor.memory_model)})


def flavor_minimums(size: elastic.InstanceSize) -> str:
    flavor = size.flavor
    if flavor.minimum_cpu is None and flavor.minimum_memory is None:
        return _("None")
    return _("%(vcpus)s vCPU, %(memory)s") % {
        'vcpus': flavor.minimum_cpu or 1,
        'memory': memory(flavor.minimum_memory or flavor.memory_mb)}


def size_changed(size: elastic.InstanceSize) -> str:
    if size.updated_at is None:
        return _("Never")
    return _("%(time)s ago") % {'time': timesince(size.updated_at)}


def adjustment_status(size: elastic.InstanceSize) -> str:
    return size.adjustment_status or ''


def adjustability(size: elastic.InstanceSize) -> str:
    """Yes / vCPUs only / Memory only / No, with why in its tooltip."""
    refusal = size.adjust_refusal()
    fixed = {dimension: size.fixed_reason(dimension)
             for dimension in (elastic.VCPUS, elastic.MEMORY)}
    if refusal is not None:
        reasons = [refusal]
    else:
        reasons = list(dict.fromkeys(str(reason) for reason in fixed.values()
                                     if reason))
    return loader.render_to_string(
        'admin/elastic_sizing/_adjustable.html', {
            'refused': refusal is not None,
            'vcpus_fixed': bool(fixed[elastic.VCPUS]),
            'memory_fixed': bool(fixed[elastic.MEMORY]),
            'reasons': '\n'.join(str(reason) for reason in reasons)})


# Each readiness verdict: how it is shown (tone: ok, warn, no, unknown)
# and what it means, in the cell's tooltip.
BALLOON_VERDICTS = {
    elastic.BALLOON_ACTIVE: ('ok', _("active, the guest's balloon driver "
                                    "sends statistics")),
    elastic.BALLOON_SILENT: ('no', _("silent, no balloon driver in the "
                                    "guest: memory changes are not taken "
                                    "up")),
    elastic.BALLOON_NO_STATISTICS: ('warn', _("no statistics collected "
                                             "(yet)")),
    elastic.BALLOON_NO_DEVICE: ('no', _("no balloon device")),
}
AGENT_VERDICTS = {
    elastic.AGENT_ANSWERING: ('ok', _("answering")),
    elastic.AGENT_NOT_ANSWERING: ('warn', _("not answering")),
    elastic.AGENT_NOT_CONFIGURED: ('warn', _("not configured")),
}
HOTPLUG_VERDICTS = {
    elastic.HOTPLUG_POSSIBLE: ('ok', _("possible")),
    elastic.HOTPLUG_NOT_POSSIBLE: ('no', _("not possible")),
}
VIRTIO_MEM_VERDICTS = {
    elastic.VIRTIO_MEM_PLUGGED: ('ok', _("plugged, the guest holds all the "
                                        "memory its device was asked to "
                                        "add")),
    elastic.VIRTIO_MEM_IDLE: ('ok', _("idle, nothing asked beyond its base "
                                     "memory: whether its virtio_mem "
                                     "driver works shows at the first "
                                     "grow")),
    elastic.VIRTIO_MEM_PLUGGING: ('warn', _("plugging, the guest holds less "
                                           "than asked and is still taking "
                                           "blocks")),
    elastic.VIRTIO_MEM_NOT_PLUGGING: ('no', _("not plugging, no virtio_mem "
                                             "driver in the guest: memory "
                                             "changes are not taken up")),
    elastic.VIRTIO_MEM_UNPLUGGING: ('warn', _("unplugging, the guest holds "
                                             "more than asked: blocks it has "
                                             "not given back yet, or "
                                             "cannot")),
}
TONE_ICONS = {'ok': 'check', 'warn': 'exclamation-triangle', 'no': 'times',
              'unknown': 'question'}
# Bootstrap's tooltip with a class of ours: its lines kept apart
# (elastic_sizing.scss).
TOOLTIP_TEMPLATE = ('<div class="tooltip xloud-tooltip" role="tooltip">'
                    '<div class="tooltip-arrow"></div>'
                    '<div class="tooltip-inner"></div></div>')


def _time(value) -> str:
    return value.strftime('%Y-%m-%d %H:%M:%S UTC')


def virtio_mem_blocks(state: elastic.VirtioMemState) -> str | None:
    """What the device holds plugged of what it was asked to add, or
    None when the host did not say."""
    if state.requested_mb is None or state.plugged_mb is None:
        return None
    return _("%(plugged)s plugged of %(requested)s asked, beyond its base "
             "memory") % {'plugged': memory(state.plugged_mb),
                          'requested': memory(state.requested_mb)}


def readiness_checks(readiness: elastic.Readiness) -> list[dict]:
    """The verdicts (balloon, guest agent, vCPU hotplug, and the
    virtio-mem device of a guest that has one): a short label, a tone and
    icon, and what the verdict means."""
    checks = []
    verdicts_of = [
        ('balloon', pgettext_lazy("Readiness", "Balloon"),
         _("Balloon"), BALLOON_VERDICTS, readiness.balloon),
        ('agent', pgettext_lazy("Readiness", "Agent"),
         _("Guest agent"), AGENT_VERDICTS, readiness.guest_agent),
        ('hotplug', pgettext_lazy("Readiness", "Hotplug"),
         _("vCPU hotplug"), HOTPLUG_VERDICTS, readiness.vcpu_hotplug)]
    if readiness.virtio_mem is not None:
        verdicts_of.append(
            ('virtio_mem', pgettext_lazy("Readiness", "virtio-mem"),
             _("virtio-mem"), VIRTIO_MEM_VERDICTS,
             readiness.virtio_mem.state))
    for name, label, described, verdicts, state in verdicts_of:
        tone, meaning = verdicts.get(state, ('unknown', _("not read")))
        checks.append({'name': name, 'label': label, 'described': described,
                       'state': state, 'tone': tone,
                       'icon': TONE_ICONS[tone], 'meaning': meaning})
    return checks


def readiness_read(readiness: elastic.Readiness) -> str:
    """When the compute host read the guest, or why it did not."""
    if readiness.as_of is not None:
        return _("Read %(time)s (%(ago)s ago).") % {
            'time': _time(readiness.as_of),
            'ago': timesince(readiness.as_of)}
    return _("Not read: %(reason)s") % {
        'reason': readiness.error or _("no reason given.")}


def readiness_state(size: elastic.InstanceSize) -> str | None:
    """Balloon / Agent / Hotplug (and virtio-mem) as short labels with
    a mark each; the tooltip says when the guest was read, what each
    verdict means, what a virtio-mem device holds, whether it migrated
    since it booted and the warnings. None (shown as "-") where the
    extension does not say."""
    readiness = size.readiness
    if readiness is None:
        return None
    checks = readiness_checks(readiness)
    lines = [readiness_read(readiness)]
    lines.extend(_("%(what)s: %(meaning)s") % {
        'what': check['described'], 'meaning': check['meaning']}
        for check in checks)
    if readiness.virtio_mem is not None:
        blocks = virtio_mem_blocks(readiness.virtio_mem)
        if blocks is not None:
            lines.append(_("virtio-mem: %s") % blocks)
    if readiness.machine_type:
        lines.append(_("Machine type: %s") % readiness.machine_type)
    lines.append(_("Live-migrated since it started: yes")
                 if readiness.migrated_since_boot
                 else _("Live-migrated since it started: no"))
    lines.extend(readiness.warnings)
    return loader.render_to_string(
        'admin/elastic_sizing/_readiness.html', {
            'checks': checks, 'warned': bool(readiness.warnings or
                                             readiness.migrated_since_boot),
            'tooltip': '\n'.join(str(line) for line in lines),
            'tooltip_template': TOOLTIP_TEMPLATE})


def _busy(value: float) -> str:
    return f'{value:.2f}'.rstrip('0').rstrip('.')


def utilisation(size: elastic.InstanceSize) -> str | None:
    """Memory used of what it has, vCPUs busy of what it has, or why not
    measured; None (shown as "-") where the extension does not say."""
    use = size.utilisation
    if use is None:
        return None
    context = {'reason': use.reason or _("Not measured."),
               'memory': None, 'vcpus': None}
    if use.memory is not None:
        context['memory'] = _("%(used)s of %(current)s") % {
            'used': memory(use.memory.used_mb),
            'current': memory(use.memory.current_mb)}
    if use.vcpus is not None:
        context['vcpus'] = _("%(busy)s of %(current)s busy") % {
            'busy': _busy(use.vcpus.busy), 'current': use.vcpus.current}
        context['window'] = ngettext_lazy(
            "On average over the last minute.",
            "On average over the last %(minutes)d minutes.",
            max(1, use.vcpus.window_seconds // 60)) % {
            'minutes': max(1, use.vcpus.window_seconds // 60)}
    return loader.render_to_string('admin/elastic_sizing/_use.html',
                                   context)


def autopilot_mode_name(mode: str | None) -> str:
    if mode is None:
        return str(pgettext_lazy("Autopilot mode", "Not read"))
    return str(AUTOPILOT_MODE_NAMES.get(mode, mode))


def dimensions_text(dimensions) -> str:
    """``memory, vCPUs``, or ``nothing``."""
    names = [str(DIMENSION_NAMES.get(dimension, dimension))
             for dimension in (elastic.MEMORY, elastic.VCPUS)
             if dimension in dimensions]
    return ', '.join(names) or str(pgettext_lazy("Autopilot dimension",
                                                 "nothing"))


def decision_size(decision: elastic.AutopilotDecision,
                  value: int | None) -> str:
    if value is None:
        return '-'
    return memory(value) if decision.dimension == elastic.MEMORY \
        else str(value)


def decision_text(decision: elastic.AutopilotDecision) -> str:
    """``grow memory 1GB → 1.8GB``; ``hold vCPUs``."""
    action = DECISION_NAMES.get(decision.action, decision.action)
    what = DIMENSION_NAMES.get(decision.dimension, decision.dimension)
    if decision.target is None or decision.target == decision.current:
        return str(_("%(action)s %(what)s") % {'action': action,
                                                'what': what})
    return str(_("%(action)s %(what)s %(current)s → %(target)s") % {
        'action': action, 'what': what,
        'current': decision_size(decision, decision.current),
        'target': decision_size(decision, decision.target)})


def autopilot_summary(autopilot: elastic.Autopilot) -> str:
    """What the column says of the last decisions: the first that is not
    a hold, or ``hold: <reason>`` briefly."""
    if autopilot.mode is None:
        return str(_("its host was not read"))
    if not autopilot.dimensions:
        return str(_("not opted in"))
    moved = autopilot.last_move
    if moved is not None:
        return decision_text(moved)
    if autopilot.decisions:
        return str(_("hold: %(reason)s") % {
            'reason': Truncator(autopilot.decisions[0].reason).chars(
                HOLD_REASON_CHARS)})
    return str(_("no decision yet"))


def autopilot_setting_text(setting: elastic.AutopilotSetting) -> str:
    """What it sizes and from where, and the mode the instance holds."""
    if setting.dimensions_from == elastic.DIMENSIONS_FROM_INSTANCE:
        source = _("its own setting")
    elif setting.dimensions_from == elastic.DIMENSIONS_FROM_FLAVOR:
        source = _("its flavor's %s") % elastic.AUTOSIZE
    else:
        source = _("its flavor has no %s") % elastic.AUTOSIZE
    if setting.instance_mode is None:
        mode = _("the mode of its host")
    else:
        mode = _("at most %s") % autopilot_mode_name(setting.instance_mode)
    return str(_("Sizes %(dimensions)s (%(source)s), %(mode)s.") % {
        'dimensions': dimensions_text(setting.dimensions),
        'source': source, 'mode': mode})


def recommended_text(target: elastic.AutopilotTarget) -> str:
    parts = []
    if target.vcpus is not None:
        parts.append(ngettext_lazy("%d vCPU", "%d vCPUs", target.vcpus)
                     % target.vcpus)
    if target.memory_mb is not None:
        parts.append(memory(target.memory_mb))
    return ', '.join(str(part) for part in parts)


def autopilot_lines(autopilot: elastic.Autopilot) -> list[str]:
    """The tooltip of the Autopilot column: the mode and why, what it
    sizes, each decision in full, when the host decided."""
    lines = []
    if autopilot.mode is None:
        lines.append(_("Not read: the compute host did not answer, or the "
                       "guest is not running."))
    else:
        lines.append(_("Mode: %(mode)s (its host: %(host)s).") % {
            'mode': autopilot_mode_name(autopilot.mode),
            'host': autopilot_mode_name(autopilot.host_mode)})
    lines.append(autopilot_setting_text(autopilot.setting))
    for decision in autopilot.decisions:
        lines.append(_("%(decision)s: %(reason)s") % {
            'decision': decision_text(decision),
            'reason': decision.reason})
    if autopilot.as_of is not None:
        lines.append(_("Decided %(time)s (%(ago)s ago).") % {
            'time': _time(autopilot.as_of),
            'ago': timesince(autopilot.as_of)})
    if autopilot.recommended is not None:
        lines.append(_("Recommended: %s.") % recommended_text(
            autopilot.recommended))
    return [str(line) for line in lines]


def autopilot_state(size: elastic.InstanceSize) -> str | None:
    """The autopilot's mode and its last decision, the full reasons in
    the tooltip; None (shown as "-") from an extension without it."""
    autopilot = size.autopilot
    if autopilot is None:
        return None
    moved = autopilot.last_move
    return loader.render_to_string(
        'admin/elastic_sizing/_autopilot.html', {
            'mode': autopilot.mode or 'unknown',
            'mode_name': autopilot_mode_name(autopilot.mode),
            'summary': autopilot_summary(autopilot),
            'action': (moved.action if moved is not None
                       else elastic.DECISION_HOLD),
            'recommended': autopilot.recommended is not None,
            'tooltip': '\n'.join(autopilot_lines(autopilot)),
            'tooltip_template': TOOLTIP_TEMPLATE})


def recommendation_refusal(size: elastic.InstanceSize) -> str | None:
    """Why the autopilot's recommendation cannot be applied now, or None
    when it can."""
    autopilot = size.autopilot
    if autopilot is not None and autopilot.mode is None:
        return str(_("The autopilot's decisions were not read: its "
                     "compute host did not answer."))
    if autopilot is None or autopilot.recommended is None:
        if autopilot is not None and autopilot.mode in (
                elastic.AUTOPILOT_OFF, elastic.AUTOPILOT_ON):
            return str(_("The autopilot recommends only in recommend "
                         "mode; it is %s for this instance.") %
                       autopilot_mode_name(autopilot.mode))
        return str(_("The autopilot calls for no change."))
    refusal = size.adjust_refusal()
    if refusal is not None:
        return str(refusal)
    target = autopilot.recommended
    for dimension, value in ((elastic.VCPUS, target.vcpus),
                             (elastic.MEMORY, target.memory_mb)):
        if value is not None and size.fixed_reason(dimension):
            return str(size.fixed_reason(dimension))
    return None


def sync_state(size: elastic.InstanceSize) -> str | None:
    """In sync / Drift (what, in its tooltip) / Unknown; None (shown as
    "-") for an instance the audit does not cover."""
    if size.sync is None:
        return None
    return loader.render_to_string(
        'admin/elastic_sizing/_sync_state.html', {'state': size.sync})


class AdjustInstance(tables.LinkAction):
    name = 'adjust'
    verbose_name = _("Adjust Size")
    url = 'horizon:admin:elastic_sizing:adjust'
    classes = ('ajax-modal',)
    icon = 'arrows-v'
    policy_rules = ADJUST_POLICY

    def update(self, request, size) -> None:
        """Disabled, with why as its tooltip, where the extension would
        refuse it (readiness, the lock, the state): shown, not hidden."""
        refusal = size.adjust_refusal()
        if refusal is not None:
            disable_action(self, str(refusal))

    def get_link_url(self, size=None) -> str:
        if size is not None and size.adjust_refusal() is not None:
            # Nothing to open.
            return '#'
        return super().get_link_url(size)


def disable_action(action: tables.Action | tables.LinkAction,
                   reason: str) -> None:
    """Shown, disabled, with why as its tooltip (elastic_sizing.js
    swallows its click)."""
    action.classes = [name for name in action.classes
                      if name != 'ajax-modal'] + [
        'disabled', 'xloud-adjust-disabled']
    action.attrs = {**action.attrs, 'title': reason,
                    'data-toggle': 'tooltip', 'data-placement': 'left',
                    'data-template': TOOLTIP_TEMPLATE,
                    'aria-disabled': 'true'}


class ApplyRecommendation(tables.Action):
    """Adjust to the size the autopilot recommends (recommend mode),
    through the ordinary adjustment; disabled, with why, where there is
    nothing to apply."""

    name = 'apply_recommendation'
    verbose_name = _("Apply Recommendation")
    icon = 'magic'
    policy_rules = ADJUST_POLICY

    def allowed(self, request, size=None) -> bool:
        # An extension without the autopilot: nothing to offer.
        return size is None or size.autopilot is not None

    def update(self, request, size) -> None:
        refusal = recommendation_refusal(size)
        if refusal is not None:
            disable_action(self, refusal)

    def get_default_classes(self):
        # A button's template shows only these: the disabled ones with
        # them.
        return [*super().get_default_classes(), *self.classes]

    def single(self, table, request, object_id):
        # What the autopilot recommends now, and whether the instance can
        # be adjusted now: read again, as the Adjust form's clean() does.
        try:
            size = elastic.with_lock_state(
                request, elastic.instance_size_get(request, object_id))
        except elastic.ApiError as exc:
            messages.error(request, _(
                'Unable to read instance "%(name)s": %(reason)s') % {
                'name': object_id, 'reason': exc.message})
            return shortcuts.redirect(request.get_full_path())
        refusal = recommendation_refusal(size)
        if refusal is not None:
            messages.error(request, _(
                'The recommendation for instance "%(name)s" cannot be '
                'applied: %(reason)s') % {'name': size.name,
                                          'reason': refusal})
            return shortcuts.redirect(request.get_full_path())
        target = size.autopilot.recommended
        try:
            elastic.adjust(request, size.id, vcpus=target.vcpus,
                           memory_mb=target.memory_mb)
        except elastic.ApiError as exc:
            messages.error(request, _(
                'Unable to adjust instance "%(name)s": %(reason)s') % {
                'name': size.name, 'reason': exc.message})
            return shortcuts.redirect(request.get_full_path())
        messages.success(request, _(
            'Adjusting instance "%(name)s" to the autopilot\'s '
            'recommendation: %(size)s.') % {
            'name': size.name, 'size': recommended_text(target)})
        return shortcuts.redirect(request.get_full_path())


class EditAutopilot(tables.LinkAction):
    name = 'autopilot'
    verbose_name = _("Autopilot Setting")
    url = 'horizon:admin:elastic_sizing:autopilot'
    classes = ('ajax-modal',)
    icon = 'sliders'
    policy_rules = AUTOPILOT_POLICY

    def allowed(self, request, size=None) -> bool:
        return size is None or size.autopilot is not None


class FixDrift(tables.Action):
    """Heal one instance's drift (the audit with ``fix``), one click from
    its Sync state; offered only where the audit found drift."""

    name = 'fix_drift'
    verbose_name = _("Fix Drift")
    icon = 'wrench'
    policy_rules = AUDIT_POLICY

    def allowed(self, request, size=None) -> bool:
        return size is None or (size.sync is not None and
                                size.sync.status == elastic.SYNC_DRIFT)

    def single(self, table, request, object_id):
        # The page's rows are loaded already (Horizon loads the table
        # before it handles an action).
        name = next((size.name for size in table.data
                     if size.id == object_id), object_id)
        try:
            fixed = elastic.fix_drift(request, object_id)
        except elastic.ApiError as exc:
            messages.error(request, _(
                'Unable to fix the drift of instance "%(name)s": '
                '%(reason)s') % {'name': name, 'reason': exc.message})
            return shortcuts.redirect(request.get_full_path())
        report_fix(request, name, fixed)
        return shortcuts.redirect(request.get_full_path())


def report_fix(request, name: str, fixed: elastic.DriftFix) -> None:
    """What the fix changed, and what it could not do, as messages."""
    if fixed.skipped:
        messages.warning(request, _(
            'Instance "%(name)s" was not fixed: %(reason)s') % {
            'name': name, 'reason': fixed.skipped})
        return
    changes = ' '.join(fixed.changes)
    if fixed.status == elastic.SYNC_IN_SYNC and not fixed.errors:
        if changes:
            messages.success(request, _(
                'Fixed the drift of instance "%(name)s": %(changes)s') % {
                'name': name, 'changes': changes})
        else:
            messages.success(request, _(
                'Instance "%(name)s" is in sync.') % {'name': name})
        return
    if changes:
        messages.success(request, _(
            'Partly fixed the drift of instance "%(name)s": %(changes)s') % {
            'name': name, 'changes': changes})
    problems = [finding.message for finding in fixed.remaining]
    problems += fixed.errors
    messages.error(request, _(
        'Drift remains on instance "%(name)s": %(problems)s') % {
        'name': name, 'problems': ' '.join(problems) or _(
            "the audit could not check it again.")})


class ViewHistory(tables.LinkAction):
    name = 'history'
    verbose_name = _("Adjustment History")
    url = 'horizon:admin:elastic_sizing:history'
    icon = 'history'
    policy_rules = (('compute', 'os_compute_api:os-instance-actions:list'),)


class BulkAdjust(tables.BatchAction):
    """Opens one adjustment form for every selected instance.

    A batch action so Horizon shows the row checkboxes; instead of acting
    on each row it hands the selected ids to the form.
    """

    name = 'bulk_adjust'
    icon = 'arrows-v'
    policy_rules = ADJUST_POLICY

    @staticmethod
    def action_present(count):
        return ngettext_lazy("Adjust Instance", "Adjust Instances", count)

    @staticmethod
    def action_past(count):
        return ngettext_lazy("Opened the adjustment of instance",
                             "Opened the adjustment of instances", count)

    def handle(self, table, request, obj_ids):
        query = parse.urlencode([('id', object_id) for object_id in obj_ids])
        return shortcuts.redirect(
            reverse('horizon:admin:elastic_sizing:bulk_adjust') + '?' + query)


class InstanceFilterAction(tables.FilterAction):
    name = 'filter_elastic_instances'
    filter_type = 'server'
    filter_choices = (
        ('name', _("Instance Name ="), True),
        ('project_id', _("Project ID ="), True),
        ('host', _("Host ="), True),
        ('flavor', _("Flavor ID ="), True),
    )


class UpdateRow(tables.Row):
    ajax = True

    def can_be_selected(self, datum) -> bool:
        # A bulk adjustment leaves out what cannot be adjusted.
        return datum.adjust_refusal() is None

    def get_data(self, request, instance_id):
        size = elastic.instance_size_get(request, instance_id)
        if not size.is_adjusting:
            # Whether it may be offered an adjustment again; unknown when
            # Nova does not say (the form's clean() asks again).
            with contextlib.suppress(elastic.ApiError):
                size = elastic.with_lock_state(request, size)
        if 'sync' not in self.table.columns:
            return size
        if size.is_adjusting:
            # Polled every few seconds meanwhile: the audit, which asks
            # the compute host, runs once the adjustment has ended.
            return dataclasses.replace(size, sync=elastic.SyncState(
                elastic.SYNC_UNKNOWN,
                reason=_("Checked once the adjustment has ended.")))
        sized = elastic.with_sync_states(request, [size])
        return size if sized is None else sized[0]


class InstancesTable(tables.DataTable):
    name = tables.WrappingColumn(
        'name', verbose_name=_("Instance"),
        link='horizon:admin:elastic_sizing:history')
    project = tables.Column('project_id', verbose_name=_("Project ID"))
    host = tables.Column('host', verbose_name=_("Host"))
    status = tables.Column('status', verbose_name=_("Status"))
    flavor = tables.Column(lambda size: size.flavor.name,
                           verbose_name=_("Flavor"))
    minimums = tables.Column(flavor_minimums,
                             verbose_name=_("Flavor Minimum"))
    vcpus = tables.Column('current_vcpus', verbose_name=_("vCPUs"),
                          classes=('xloud-current',))
    max_vcpus = tables.Column('max_vcpus', verbose_name=_("Max vCPUs"))
    memory = tables.Column(current_memory, verbose_name=_("Memory"),
                           classes=('xloud-current',))
    max_memory = tables.Column(lambda size: memory(size.max_memory_mb),
                               verbose_name=_("Max Memory"))
    changed = tables.Column(size_changed, verbose_name=_("Size Changed"))
    use = tables.Column(
        utilisation, verbose_name=_("Use"), classes=('xloud-use',),
        help_text=_("Memory the guest uses of what it has, and vCPUs busy "
                    "of those it has, as its compute host measured them."))
    readiness = tables.Column(
        readiness_state, verbose_name=_("Readiness"),
        classes=('xloud-readiness',),
        help_text=_("Whether the guest can take up an adjustment: its "
                    "balloon driver, its guest agent, vCPU hotplug and, "
                    "for a virtio-mem guest, its virtio-mem device."))
    adjustable = tables.Column(
        adjustability, verbose_name=_("Adjustable"),
        classes=('xloud-adjustable',),
        help_text=_("Whether the instance's vCPUs and memory can be "
                    "adjusted now, and why not."))
    autopilot = tables.Column(
        autopilot_state, verbose_name=_("Autopilot"),
        classes=('xloud-autopilot',),
        help_text=_("The autopilot's mode for the instance and what it "
                    "last decided on its compute host; the reasons in "
                    "full in the tooltip."))
    adjustment = tables.Column(
        adjustment_status, verbose_name=_("Adjustment"), status=True,
        status_choices=ADJUSTMENT_STATUS_CHOICES,
        display_choices=ADJUSTMENT_DISPLAY_CHOICES)
    error = tables.WrappingColumn('adjustment_error',
                                  verbose_name=_("Adjustment Error"),
                                  classes=('xloud-error',))
    sync = tables.Column(sync_state, verbose_name=_("Sync"),
                         classes=('xloud-sync',), policy_rules=AUDIT_POLICY,
                         help_text=_("Whether libvirt, the recorded size "
                                     "and placement agree (the audit)."))

    class Meta:
        name = 'instances'
        pagination_param = 'instances_marker'
        verbose_name = _("Instances")
        status_columns = ['adjustment']
        row_class = UpdateRow
        table_actions = (InstanceFilterAction, BulkAdjust)
        row_actions = (AdjustInstance, ApplyRecommendation, EditAutopilot,
                       ViewHistory, FixDrift)

    def __init__(self, request, *args, **kwargs):
        super().__init__(request, *args, **kwargs)
        # A cloud that refused the audit recently (its policy, or an
        # extension older than the audit): no column, on the page and in
        # the rows that refresh themselves alike.
        if 'sync' in self.columns and not elastic.audit_offered(request):
            self.hide_sync()

    def hide_sync(self) -> None:
        self.columns.pop('sync', None)


class EditMinimums(tables.LinkAction):
    name = 'edit_minimums'
    verbose_name = _("Edit Minimums")
    url = 'horizon:admin:elastic_sizing:edit_minimums'
    classes = ('ajax-modal',)
    icon = 'pencil'
    policy_rules = EXTRA_SPECS_POLICY


class ApplyMinimums(tables.LinkAction):
    name = 'apply_minimums'
    verbose_name = _("Apply to Instances")
    url = 'horizon:admin:elastic_sizing:apply_minimums'
    classes = ('ajax-modal',)
    icon = 'refresh'
    policy_rules = FLAVOR_MINIMUMS_POLICY


class FlavorFilterAction(tables.FilterAction):
    name = 'filter_elastic_flavors'


class FlavorsTable(tables.DataTable):
    name = tables.WrappingColumn('name', verbose_name=_("Flavor"))
    flavor_id = tables.Column('id', verbose_name=_("ID"))
    vcpus = tables.Column('vcpus', verbose_name=_("vCPUs"))
    memory = tables.Column(lambda flavor: memory(flavor.memory_mb),
                           verbose_name=_("RAM"))
    minimum_cpu = tables.Column('minimum_cpu',
                                verbose_name=_("Minimum vCPUs"))
    minimum_memory = tables.Column(
        lambda flavor: (memory(flavor.minimum_memory)
                        if flavor.minimum_memory else None),
        verbose_name=_("Minimum RAM"))
    memory_model = tables.Column(
        lambda flavor: memory_model_name(flavor.memory_model),
        verbose_name=_("Memory Method"),
        help_text=_("How its instances' memory is adjusted live; an "
                    "instance keeps the method its domain was generated "
                    "with."))
    autosize = tables.Column(
        lambda flavor: (AUTOSIZE_NAMES[flavor.autosize] if flavor.autosize
                        else pgettext_lazy("Autosize", "Nothing")),
        verbose_name=_("Autopilot Sizes"),
        help_text=_("What the autopilot sizes of its instances (extra spec "
                    "xloud:autosize); what it does is each compute host's "
                    "mode."))
    public = tables.Column('is_public', verbose_name=_("Public"),
                           filters=(lambda public: _("Yes") if public
                                    else _("No"),))

    class Meta:
        name = 'flavors'
        verbose_name = _("Flavors")
        table_actions = (FlavorFilterAction,)
        row_actions = (EditMinimums, ApplyMinimums)


def history_result(entry: elastic.HistoryEntry) -> str:
    return (entry.result or '').lower()


def history_by(entry: elastic.HistoryEntry) -> str:
    if entry.automatic:
        return str(pgettext_lazy("Adjusted by", "Autopilot"))
    return entry.user_id or '-'


def history_change(entry: elastic.HistoryEntry) -> str:
    parts = []
    if 'vcpus' in entry.changes:
        old, new = entry.changes['vcpus']
        parts.append(_("vCPUs %(old)s → %(new)s") % {'old': old, 'new': new})
    if 'memory_mb' in entry.changes:
        old, new = entry.changes['memory_mb']
        parts.append(_("memory %(old)s → %(new)s") % {
            'old': memory(old), 'new': memory(new)})
    return ', '.join(str(part) for part in parts) or '-'


class HistoryRow(tables.Row):

    def load_cells(self, datum=None):
        super().load_cells(datum)
        self.attrs['data-by'] = ('autopilot' if self.datum.automatic
                                 else 'user')
        if self.datum.automatic:
            self.classes.append('xloud-automatic')


class HistoryTable(tables.DataTable):
    start_time = tables.Column('start_time', verbose_name=_("Requested"),
                               filters=(lambda value: value and
                                        value.strftime('%Y-%m-%d %H:%M:%S'),))
    by = tables.Column(history_by, verbose_name=_("By"),
                       classes=('xloud-history-by',),
                       help_text=_("The autopilot, or the ID of the user "
                                   "who asked for the change."))
    change = tables.Column(history_change, verbose_name=_("Change"))
    reason = tables.WrappingColumn(
        'reason', verbose_name=_("Reason"), classes=('xloud-history-reason',),
        help_text=_("Why the autopilot made the change."))
    result = tables.Column(history_result, verbose_name=_("Result"),
                           status=True, status_choices=RESULT_STATUS_CHOICES,
                           display_choices=RESULT_DISPLAY_CHOICES)
    details = tables.WrappingColumn('details', verbose_name=_("Details"))
    request_id = tables.Column('request_id', verbose_name=_("Request ID"))

    class Meta:
        name = 'history'
        verbose_name = _("Adjustment History")
        status_columns = ['result']
        row_class = HistoryRow

    def get_object_id(self, entry: elastic.HistoryEntry) -> str:
        return entry.request_id


HOST_EXPOSURE_POLICY = (('compute', 'xloud:elastic_sizing:host_exposure'),)
# A host a full burst would take over capacity marks its row as failed.
EXPOSURE_STATUS_CHOICES = (
    ('over', False),
    ('within', True),
    ('unknown', None),
)
EXPOSURE_DISPLAY_CHOICES = (
    ('over', pgettext_lazy("Host exposure", "Over capacity")),
    ('within', pgettext_lazy("Host exposure", "Within capacity")),
    ('unknown', pgettext_lazy("Host exposure", "Not read")),
)


def exposure_status(host: elastic.HostExposure) -> str:
    if host.error:
        return 'unknown'
    return 'over' if host.over_capacity else 'within'


def _exposure_value(dimension_name: str, field: str, as_memory: bool):
    def value(host: elastic.HostExposure) -> str:
        dimension = getattr(host, dimension_name)
        if dimension is None:
            return '-'
        number = getattr(dimension, field)
        return memory(number) if as_memory else str(number)
    return value


class ExposureRow(tables.Row):

    def load_cells(self, datum=None):
        super().load_cells(datum)
        if self.datum.over_capacity:
            self.classes.extend(['danger', 'xloud-over-capacity'])
        self.attrs['data-host'] = self.datum.name


class HostExposureTable(tables.DataTable):
    host = tables.Column('name', verbose_name=_("Host"))
    elastic_instances = tables.Column(
        'elastic_instances', verbose_name=_("Elastic Instances"))
    vcpus_capacity = tables.Column(
        _exposure_value('vcpus', 'capacity', False),
        verbose_name=_("vCPU Capacity"),
        help_text=_("(total - reserved) × allocation ratio, as placement "
                    "counts it."))
    vcpus_allocated = tables.Column(
        _exposure_value('vcpus', 'allocated', False),
        verbose_name=_("vCPUs Allocated"))
    vcpus_headroom = tables.Column(
        _exposure_value('vcpus', 'headroom', False),
        verbose_name=_("vCPU Headroom to Max"),
        help_text=_("What the elastic instances would add at their "
                    "flavor's maximum."))
    vcpus_potential = tables.Column(
        _exposure_value('vcpus', 'potential', False),
        verbose_name=_("vCPUs at Max"))
    memory_capacity = tables.Column(
        _exposure_value('memory_mb', 'capacity', True),
        verbose_name=_("Memory Capacity"))
    memory_allocated = tables.Column(
        _exposure_value('memory_mb', 'allocated', True),
        verbose_name=_("Memory Allocated"))
    memory_headroom = tables.Column(
        _exposure_value('memory_mb', 'headroom', True),
        verbose_name=_("Memory Headroom to Max"))
    memory_potential = tables.Column(
        _exposure_value('memory_mb', 'potential', True),
        verbose_name=_("Memory at Max"))
    status = tables.Column(
        exposure_status, verbose_name=_("Full Burst"), status=True,
        status_choices=EXPOSURE_STATUS_CHOICES,
        display_choices=EXPOSURE_DISPLAY_CHOICES)
    error = tables.WrappingColumn('error', verbose_name=_("Error"))

    class Meta:
        name = 'host_exposure'
        verbose_name = _("Host Exposure")
        status_columns = ['status']
        row_class = ExposureRow

    def get_object_id(self, host: elastic.HostExposure) -> str:
        return host.id
