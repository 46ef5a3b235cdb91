"""Nova calls of the Elastic Sizing panel, through openstacksdk.

The ``os-xloud-adjust`` extension (``doc/design.md`` has its contract),
flavor minimums and memory model as Nova extra specs and, for the
instances of a flavor, the ``os-xloud-flavor-minimums`` API
(``doc/api.md``), the adjustment history (manual and the autopilot's)
as Nova instance actions with the change records of the extension's
single GET, each instance's readiness, utilisation, recommended size and
autopilot from the extension's list (``?readiness=true``) and single GET,
the autopilot's setting of an instance, whether each instance is in sync
from the ``os-xloud-audit`` API (``doc/audit.md``) and healing one's
drift, and which instances are locked from Nova's server API.
All calls go through one compute proxy per request, built from the user's
token and the catalog's compute endpoint, as Horizon's own
``openstack_dashboard.api._nova.computeclient`` does.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import importlib.metadata
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import openstack.connection
import openstack.exceptions
from django.conf import settings
from django.utils.translation import gettext_lazy as _
from horizon import exceptions as horizon_exceptions
from horizon.utils import functions as horizon_utils
from horizon.utils import memoized
from keystoneauth1 import exceptions as ksa_exceptions
from keystoneauth1 import session as ksa_session
from keystoneauth1 import token_endpoint
from openstack_auth import utils as auth_utils
from openstack_dashboard.api import base

from xloud_dashboard.exceptions import ApiError, NotFound, Unauthorized

EXTENSION_PATH = '/os-xloud-adjust'
AUDIT_PATH = '/os-xloud-audit'
FLAVOR_MINIMUMS_PATH = '/os-xloud-flavor-minimums'
ADJUST_ACTION = 'xloud-adjust'
ADJUST_EVENT = 'compute_xloud_adjust'
# An autopilot change (nova_ext.sizing.AUTO_ACTION): its event is named
# ``compute_xloud_autosize: <reason>`` and its change record ends with
# ``; autopilot: <reason>``.
AUTO_ACTION = 'xloud-autosize'
AUTO_EVENT = 'compute_xloud_autosize'
AUTO_RECORD_SEPARATOR = '; autopilot: '
HISTORY_ACTIONS = (ADJUST_ACTION, AUTO_ACTION)
# The flavor minimums (nova_ext.sizing): scoped keys, and the seed's
# unscoped ones still read where the scoped one is absent.
MINIMUM_CPU = 'xloud:minimum_cpu'
MINIMUM_MEMORY = 'xloud:minimum_memory'
LEGACY_KEYS = {MINIMUM_CPU: 'minimum_cpu', MINIMUM_MEMORY: 'minimum_memory'}
# How an instance's memory is adjusted live (nova_ext.sizing,
# doc/flavors.md "Memory models"): the balloon unless the flavor names
# virtio-mem, which plugs memory in blocks of VIRTIO_MEM_BLOCK_MB.
MEMORY_MODEL = 'xloud:memory_model'
MEMORY_MODEL_BALLOON = 'balloon'
MEMORY_MODEL_VIRTIO_MEM = 'virtio-mem'
MEMORY_MODELS = (MEMORY_MODEL_BALLOON, MEMORY_MODEL_VIRTIO_MEM)
VIRTIO_MEM_BLOCK_MB = 2
# What the autopilot sizes of a flavor's instances (nova_ext.sizing
# AUTOSIZE*): absent, nothing.
AUTOSIZE = 'xloud:autosize'
AUTOSIZE_MEMORY = 'memory'
AUTOSIZE_CPU = 'cpu'
AUTOSIZE_BOTH = 'memory,cpu'
AUTOSIZE_VALUES = (AUTOSIZE_MEMORY, AUTOSIZE_CPU, AUTOSIZE_BOTH)
# What the editor passes to remove the key.
AUTOSIZE_NONE = 'none'
# The autopilot's modes, in order: an instance never runs one above its
# host's (nova_ext.sizing.AUTOPILOT_MODES).
AUTOPILOT_OFF = 'off'
AUTOPILOT_RECOMMEND = 'recommend'
AUTOPILOT_ON = 'on'
AUTOPILOT_MODES = (AUTOPILOT_OFF, AUTOPILOT_RECOMMEND, AUTOPILOT_ON)
# An autopilot decision's action (nova_ext.autopilot).
DECISION_GROW = 'grow'
DECISION_SHRINK = 'shrink'
DECISION_HOLD = 'hold'
DECISION_SKIPPED = 'skipped'
# Where the dimensions the autopilot sizes come from.
DIMENSIONS_FROM_FLAVOR = 'flavor'
DIMENSIONS_FROM_INSTANCE = 'instance'
# [xloud] memory_floor_mb's default, for a cloud whose extension does not
# say (older than os-xloud-flavor-minimums).
DEFAULT_MEMORY_FLOOR_MB = 256

VCPUS = 'vcpus'
MEMORY = 'memory_mb'
STATUS_ERROR_SERVER = 'ERROR'

STATUS_ADJUSTING = 'adjusting'
STATUS_SUCCESS = 'success'
STATUS_ERROR = 'error'
# Applied by libvirt, but the guest does not run with it (vCPUs offline).
STATUS_PARTIAL = 'partial'

# An instance's state in the audit's report.
SYNC_IN_SYNC = 'in_sync'
SYNC_DRIFT = 'drift'
SYNC_UNKNOWN = 'unknown'

# The verdicts of readiness (doc/readiness.md): what the compute host read of
# the guest's balloon, guest agent and vCPU hotplug.
READY_UNKNOWN = 'unknown'
BALLOON_ACTIVE = 'active'
BALLOON_SILENT = 'silent'
BALLOON_NO_STATISTICS = 'no_statistics'
BALLOON_NO_DEVICE = 'no_device'
AGENT_ANSWERING = 'answering'
AGENT_NOT_ANSWERING = 'not_answering'
AGENT_NOT_CONFIGURED = 'not_configured'
HOTPLUG_POSSIBLE = 'possible'
HOTPLUG_NOT_POSSIBLE = 'not_possible'
# A virtio-mem guest's device (nova_ext.readiness.VIRTIO_MEM_STATES).
VIRTIO_MEM_PLUGGED = 'plugged'
VIRTIO_MEM_IDLE = 'idle'
VIRTIO_MEM_PLUGGING = 'plugging'
VIRTIO_MEM_NOT_PLUGGING = 'not_plugging'
VIRTIO_MEM_UNPLUGGING = 'unplugging'

# The extension is served by a paste filter in front of Nova's API and
# takes no microversion; 2.61 lists flavors with their extra specs, 2.73
# filters servers by ``locked`` and shows ``locked_reason``, and 2.84 adds
# the ``details`` of instance action events.
EXTENSION_MICROVERSION = '2.1'
FLAVOR_MICROVERSION = '2.61'
LOCK_MICROVERSION = '2.73'
ACTION_MICROVERSION = '2.84'

# How many of the newest adjustments the history shows; each costs one
# call, so the page stays bounded however old the instance is.
HISTORY_LIMIT = 20
# Concurrent calls for bulk operations: enough to hide latency without
# flooding nova-api with one request per selected row at once.
MAX_WORKERS = 8
# How long the panel trusts its answer to "does this cloud offer the
# extension" before asking again (every page renders the navigation).
EXTENSION_CHECK_TTL = 300
_EXTENSION_SESSION_KEY = 'xloud_elastic_sizing_offered'
# When the cloud last refused the audit to this user (policy, or an
# extension older than the audit), per compute endpoint; asked again after
# EXTENSION_CHECK_TTL.
_AUDIT_REFUSED_SESSION_KEY = 'xloud_elastic_sizing_audit_refused'
# When the extension last refused ``?readiness=true`` (older than
# readiness), per compute endpoint; asked again after EXTENSION_CHECK_TTL.
_READINESS_REFUSED_SESSION_KEY = 'xloud_elastic_sizing_readiness_refused'

_DETAILS_RE = re.compile(
    r'(?P<key>vcpus|memory_mb)\s+(?P<old>\d+)\s*->\s*(?P<new>\d+)')


@dataclasses.dataclass(frozen=True)
class Flavor:
    """A flavor's size (the maximum) and its elastic minimums."""

    id: str
    name: str
    vcpus: int
    memory_mb: int
    minimum_cpu: int | None = None
    minimum_memory: int | None = None
    is_public: bool = True
    # The seed's unscoped keys the flavor still holds.
    legacy_keys: tuple[str, ...] = ()
    memory_model: str = MEMORY_MODEL_BALLOON
    # ``xloud:autosize`` when it holds a value the extension knows.
    autosize: str | None = None

    @classmethod
    def from_nova(cls, body: dict[str, Any]) -> Flavor:
        specs = body.get('extra_specs') or {}
        return cls(id=body['id'], name=body['name'], vcpus=body['vcpus'],
                   memory_mb=body['ram'],
                   minimum_cpu=_minimum(specs, MINIMUM_CPU, body['vcpus']),
                   minimum_memory=_minimum(specs, MINIMUM_MEMORY,
                                           body['ram']),
                   is_public=body.get('os-flavor-access:is_public', True),
                   legacy_keys=tuple(LEGACY_KEYS[key] for key in LEGACY_KEYS
                                     if LEGACY_KEYS[key] in specs),
                   memory_model=_memory_model(specs),
                   autosize=_autosize(specs))

    @classmethod
    def from_extension(cls, body: dict[str, Any]) -> Flavor:
        # An extension older than the memory models has only the balloon.
        return cls(id=body['id'], name=body['name'], vcpus=body['vcpus'],
                   memory_mb=body['memory_mb'],
                   minimum_cpu=body.get('minimum_cpu'),
                   minimum_memory=body.get('minimum_memory'),
                   memory_model=(body.get('memory_model') or
                                 MEMORY_MODEL_BALLOON))


@dataclasses.dataclass(frozen=True)
class SizeChange:
    """What one adjustment changed, as the compute host recorded it."""

    request_id: str
    changed_at: datetime.datetime | None
    details: str

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> SizeChange:
        return cls(request_id=body['request_id'],
                   changed_at=_parse_time(body.get('changed_at')),
                   details=body.get('details') or '')


@dataclasses.dataclass(frozen=True)
class DriftFinding:
    """One disagreement the audit found for an instance."""

    kind: str
    severity: str
    message: str

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> DriftFinding:
        return cls(kind=body['kind'], severity=body['severity'],
                   message=body['message'])


@dataclasses.dataclass(frozen=True)
class SyncState:
    """Whether an instance's domain, record and placement agree.

    ``status`` is ``in_sync``, ``drift`` or ``unknown`` (not checked:
    ``reason`` says why).
    """

    status: str
    findings: tuple[DriftFinding, ...] = ()
    reason: str | None = None

    @property
    def is_critical(self) -> bool:
        return any(finding.severity == 'critical'
                   for finding in self.findings)


@dataclasses.dataclass(frozen=True)
class GuestView:
    """The guest's own view, as the compute host last read it: its agent,
    the vCPUs it runs online and the memory it can use."""

    agent: str | None
    online_vcpus: int | None
    available_memory_mb: int | None
    usable_memory_mb: int | None
    as_of: datetime.datetime | None

    @classmethod
    def from_api(cls, body: dict[str, Any] | None) -> GuestView | None:
        if body is None:
            return None
        return cls(agent=body.get('agent'),
                   online_vcpus=body.get('online_vcpus'),
                   available_memory_mb=body.get('available_memory_mb'),
                   usable_memory_mb=body.get('usable_memory_mb'),
                   as_of=_parse_time(body.get('as_of')))


@dataclasses.dataclass(frozen=True)
class VirtioMemState:
    """A virtio-mem guest's device as its compute host read it: the
    verdict (VIRTIO_MEM_*, or ``unknown``) and the MiB beyond the guest's
    base memory the device was asked to add and holds plugged."""

    state: str
    requested_mb: int | None
    plugged_mb: int | None

    @classmethod
    def from_api(cls, body: dict[str, Any] | None) -> VirtioMemState | None:
        if body is None:
            return None
        return cls(state=body.get('state') or READY_UNKNOWN,
                   requested_mb=body.get('requested_mb'),
                   plugged_mb=body.get('plugged_mb'))


@dataclasses.dataclass(frozen=True)
class Readiness:
    """Whether an adjustment of each dimension can work now, from what the
    compute host read of the guest (balloon, guest agent, vCPU hotplug)
    and what the API knows (lock, state, flavor).

    ``as_of`` is None when the host was not read (``error`` says why);
    its verdicts are then ``unknown``.
    """

    as_of: datetime.datetime | None
    error: str | None
    balloon: str
    guest_agent: str
    vcpu_hotplug: str
    machine_type: str | None
    migrated_since_boot: bool
    last_outcome: str | None
    adjustable: dict[str, bool]
    reasons: dict[str, str | None]
    warnings: tuple[str, ...] = ()
    # None for a balloon guest.
    virtio_mem: VirtioMemState | None = None

    def refusal(self, dimension: str) -> str | None:
        """Why ``dimension`` cannot be adjusted now, or None when it can."""
        if self.adjustable.get(dimension, True):
            return None
        return (self.reasons.get(dimension) or
                _("The extension says it cannot be adjusted now."))

    @classmethod
    def from_api(cls, body: dict[str, Any] | None) -> Readiness | None:
        if body is None:
            return None
        adjustable = body.get('adjustable') or {}
        reasons = body.get('reasons') or {}
        return cls(
            as_of=_parse_time(body.get('as_of')), error=body.get('error'),
            balloon=body.get('balloon') or READY_UNKNOWN,
            guest_agent=body.get('guest_agent') or READY_UNKNOWN,
            vcpu_hotplug=body.get('vcpu_hotplug') or READY_UNKNOWN,
            machine_type=body.get('machine_type'),
            migrated_since_boot=bool(body.get('migrated_since_boot')),
            last_outcome=body.get('last_outcome'),
            adjustable={dimension: bool(adjustable.get(dimension, True))
                        for dimension in (VCPUS, MEMORY)},
            reasons={dimension: reasons.get(dimension)
                     for dimension in (VCPUS, MEMORY)},
            warnings=tuple(body.get('warnings') or ()),
            virtio_mem=VirtioMemState.from_api(body.get('virtio_mem')))


@dataclasses.dataclass(frozen=True)
class MemoryUse:
    """Memory the guest uses of what it has now (balloon statistics)."""

    used_mb: int
    current_mb: int

    @classmethod
    def from_api(cls, body: dict[str, Any] | None) -> MemoryUse | None:
        if body is None:
            return None
        return cls(used_mb=body['used_mb'], current_mb=body['current_mb'])


@dataclasses.dataclass(frozen=True)
class VcpuUse:
    """vCPUs busy on average over the window, of those it has now."""

    busy: float
    current: int
    window_seconds: int

    @classmethod
    def from_api(cls, body: dict[str, Any] | None) -> VcpuUse | None:
        if body is None:
            return None
        return cls(busy=body['busy'], current=body['current'],
                   window_seconds=body['window_seconds'])


@dataclasses.dataclass(frozen=True)
class Utilisation:
    """What the guest uses; ``reason`` says why a figure is missing."""

    memory: MemoryUse | None
    vcpus: VcpuUse | None
    reason: str | None = None

    @classmethod
    def from_api(cls, body: dict[str, Any] | None) -> Utilisation | None:
        if body is None:
            return None
        return cls(memory=MemoryUse.from_api(body.get('memory')),
                   vcpus=VcpuUse.from_api(body.get('vcpus')),
                   reason=body.get('reason'))


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """The size the extension recommends from the utilisation, within the
    instance's limits; None where it has none. The rules spell out how
    each figure was reached."""

    vcpus: int | None
    memory_mb: int | None
    vcpus_rule: str | None = None
    memory_rule: str | None = None

    def value(self, dimension: str) -> int | None:
        return self.vcpus if dimension == VCPUS else self.memory_mb

    def rule(self, dimension: str) -> str | None:
        return self.vcpus_rule if dimension == VCPUS else self.memory_rule

    @property
    def is_empty(self) -> bool:
        return self.vcpus is None and self.memory_mb is None

    @classmethod
    def from_api(cls, body: dict[str, Any] | None
                 ) -> Recommendation | None:
        if body is None:
            return None
        return cls(vcpus=body.get('vcpus'), memory_mb=body.get('memory_mb'),
                   vcpus_rule=body.get('vcpus_rule'),
                   memory_rule=body.get('memory_rule'))


@dataclasses.dataclass(frozen=True)
class DriftFix:
    """What the audit's fix did with one instance: its state afterwards,
    what it changed, what it could not do, what drift remains."""

    server_id: str
    status: str | None
    changes: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    remaining: tuple[DriftFinding, ...] = ()
    skipped: str | None = None

    @classmethod
    def from_report(cls, server_id: str, report: dict[str, Any]) -> DriftFix:
        status = next((server['status'] for server in report['servers']
                       if server['server_id'] == server_id), None)
        changes: list[str] = []
        errors: list[str] = []
        for healed in report['healed']:
            if healed['server_id'] == server_id:
                changes.extend(healed['changes'])
                errors.extend(healed['errors'])
        remaining = tuple(DriftFinding.from_api(finding)
                          for finding in report['remaining']
                          if finding['server_id'] == server_id)
        skipped = next((entry['reason'] for entry in report['skipped']
                        if entry['server_id'] == server_id), None)
        # A host that did not answer is an error of the report.
        errors.extend(report.get('errors') or ())
        return cls(server_id=server_id, status=status,
                   changes=tuple(changes), errors=tuple(errors),
                   remaining=remaining, skipped=skipped)


@dataclasses.dataclass(frozen=True)
class AutopilotDecision:
    """What the autopilot last decided for one dimension: grow, shrink,
    hold or skipped, from ``current`` to ``target`` (None where it has
    none), and its reason in an operator's words."""

    dimension: str
    action: str
    current: int | None
    target: int | None
    reason: str

    @property
    def is_move(self) -> bool:
        return self.action in (DECISION_GROW, DECISION_SHRINK)

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> AutopilotDecision:
        return cls(dimension=body['dimension'], action=body['action'],
                   current=body.get('current'), target=body.get('target'),
                   reason=body.get('reason') or '')


@dataclasses.dataclass(frozen=True)
class AutopilotTarget:
    """The size the autopilot would move to in recommend mode; None
    where it leaves a dimension as it is."""

    vcpus: int | None
    memory_mb: int | None

    @classmethod
    def from_api(cls, body: dict[str, Any] | None
                 ) -> AutopilotTarget | None:
        if body is None:
            return None
        target = cls(vcpus=body.get('vcpus'),
                     memory_mb=body.get('memory_mb'))
        if target.vcpus is None and target.memory_mb is None:
            return None
        return target


@dataclasses.dataclass(frozen=True)
class AutopilotSetting:
    """An instance's own autopilot setting: the dimensions it sizes
    (from ``dimensions_from``: its flavor's ``xloud:autosize``, the
    instance's override, or None for neither) and the mode the instance
    holds it to (None: its host's)."""

    dimensions: tuple[str, ...]
    dimensions_from: str | None
    instance_mode: str | None

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> AutopilotSetting:
        return cls(dimensions=tuple(body.get('dimensions') or ()),
                   dimensions_from=body.get('dimensions_from'),
                   instance_mode=body.get('instance_mode'))


@dataclasses.dataclass(frozen=True)
class Autopilot:
    """Whether and how the autopilot sizes an instance, and what it last
    decided on its compute host.

    ``host_mode`` and ``mode`` (the effective one) are None when the host
    was not read; ``recommended`` is set only in recommend mode when a
    grow or shrink is called for.
    """

    setting: AutopilotSetting
    host_mode: str | None
    mode: str | None
    decisions: tuple[AutopilotDecision, ...] = ()
    as_of: datetime.datetime | None = None
    recommended: AutopilotTarget | None = None

    @property
    def dimensions(self) -> tuple[str, ...]:
        return self.setting.dimensions

    @property
    def last_move(self) -> AutopilotDecision | None:
        """The first decision that is not a hold (a grow, a shrink, or a
        change it skipped), or None when it holds everything."""
        return next((decision for decision in self.decisions
                     if decision.action != DECISION_HOLD), None)

    @classmethod
    def from_api(cls, body: dict[str, Any] | None) -> Autopilot | None:
        if body is None:
            return None
        return cls(
            setting=AutopilotSetting.from_api(body),
            host_mode=body.get('host_mode'), mode=body.get('mode'),
            decisions=tuple(AutopilotDecision.from_api(decision)
                            for decision in body.get('decisions') or ()),
            as_of=_parse_time(body.get('as_of')),
            recommended=AutopilotTarget.from_api(body.get('recommended')))


@dataclasses.dataclass(frozen=True)
class InstanceSize:
    """One instance's elastic size as the extension reports it."""

    id: str
    name: str
    project_id: str
    host: str | None
    status: str
    flavor: Flavor
    current_vcpus: int
    current_memory_mb: int
    max_vcpus: int
    max_memory_mb: int
    min_vcpus: int
    min_memory_mb: int
    source: str
    updated_at: datetime.datetime | None
    adjustment_status: str | None
    adjustment_error: str | None
    # Why a dimension cannot be adjusted (its flavor, image or devices),
    # by VCPUS / MEMORY; None where it can.
    not_adjustable: dict[str, str | None] = dataclasses.field(
        default_factory=lambda: {VCPUS: None, MEMORY: None})
    # Only the single GET carries them, newest first.
    changes: tuple[SizeChange, ...] = ()
    # From the audit, when the page asked for it; None when not audited.
    sync: SyncState | None = None
    # From Nova's server API (with_lock_states, server_lock_state); None
    # when not asked.
    locked: bool | None = None
    locked_reason: str | None = None
    # The guest's own view: the single GET always, the list when asked
    # with readiness; None from an extension that does not send it.
    guest: GuestView | None = None
    # Readiness, utilisation and the recommendation: the single GET, and
    # the list when asked with readiness; None from an older extension.
    readiness: Readiness | None = None
    utilisation: Utilisation | None = None
    recommendation: Recommendation | None = None
    # The autopilot's setting and last decisions: with readiness; None
    # from an extension older than the autopilot.
    autopilot: Autopilot | None = None

    @property
    def is_adjusting(self) -> bool:
        return self.adjustment_status == STATUS_ADJUSTING

    def fixed_reason(self, dimension: str) -> str | None:
        """Why ``dimension`` (VCPUS or MEMORY) cannot be adjusted, or None.

        The extension's reason (a setting that makes it non-elastic), a
        floor equal to the maximum (nothing to adjust), or what readiness
        says stops it now (the guest, the lock, the state).
        """
        reason = self.not_adjustable.get(dimension)
        if reason:
            return reason
        low, high = ((self.min_vcpus, self.max_vcpus) if dimension == VCPUS
                     else (self.min_memory_mb, self.max_memory_mb))
        if low >= high:
            if dimension == VCPUS:
                return _("The flavor allows no other number of vCPUs "
                         "(minimum = maximum = %d).") % high
            return _("The flavor allows no other amount of memory "
                     "(minimum = maximum = %d MB).") % high
        if self.readiness is not None:
            return self.readiness.refusal(dimension)
        return None

    def adjustable(self, dimension: str) -> bool:
        return self.fixed_reason(dimension) is None

    def recommended(self, dimension: str) -> int | None:
        """The recommendation for ``dimension`` where it can be adjusted,
        held within its limits; None without one."""
        if self.recommendation is None or not self.adjustable(dimension):
            return None
        value = self.recommendation.value(dimension)
        if value is None:
            return None
        low, high = ((self.min_vcpus, self.max_vcpus) if dimension == VCPUS
                     else (self.min_memory_mb, self.max_memory_mb))
        return min(max(value, low), high)

    def adjust_refusal(self) -> str | None:
        """Why the instance cannot be adjusted now, or None when it can.

        What the extension would answer 409 or 400 to without a doubt:
        an adjustment in flight, an instance in error, a locked one
        (when its lock state was asked), nothing adjustable.
        """
        if self.is_adjusting:
            return _("An adjustment is in progress.")
        if self.status == STATUS_ERROR_SERVER:
            return _("The instance is in error.")
        if self.locked:
            if self.locked_reason:
                return _("The instance is locked: %s") % self.locked_reason
            return _("The instance is locked.")
        reasons = [self.fixed_reason(dimension)
                   for dimension in (VCPUS, MEMORY)]
        if all(reasons):
            # One setting often fixes both: say it once.
            return ' '.join(dict.fromkeys(str(reason) for reason in reasons))
        return None

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> InstanceSize:
        adjustment = body.get('adjustment') or {}
        return cls(
            id=body['id'], name=body.get('name') or body['id'],
            project_id=body.get('project_id'), host=body.get('host'),
            status=body.get('status'),
            flavor=Flavor.from_extension(body['flavor']),
            current_vcpus=body['current_vcpus'],
            current_memory_mb=body['current_memory_mb'],
            max_vcpus=body['max_vcpus'],
            max_memory_mb=body['max_memory_mb'],
            min_vcpus=body['min_vcpus'],
            min_memory_mb=body['min_memory_mb'],
            source=body.get('source'),
            updated_at=_parse_time(body.get('updated_at')),
            adjustment_status=adjustment.get('status'),
            adjustment_error=adjustment.get('error'),
            not_adjustable={
                dimension: (body.get('not_adjustable') or {}).get(dimension)
                for dimension in (VCPUS, MEMORY)},
            changes=tuple(SizeChange.from_api(change)
                          for change in body.get('changes') or ()),
            guest=GuestView.from_api(body.get('guest')),
            readiness=Readiness.from_api(body.get('readiness')),
            utilisation=Utilisation.from_api(body.get('utilisation')),
            recommendation=Recommendation.from_api(
                body.get('recommendation')),
            autopilot=Autopilot.from_api(body.get('autopilot')))


@dataclasses.dataclass(frozen=True)
class AdjustRequest:
    """A size asked for one instance; None leaves that dimension alone."""

    server_id: str
    vcpus: int | None = None
    memory_mb: int | None = None
    persist: bool = True


@dataclasses.dataclass(frozen=True)
class AdjustOutcome:
    """What became of one request of a bulk adjustment."""

    request: AdjustRequest
    accepted: bool
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    """One ``xloud-adjust`` (manual) or ``xloud-autosize`` (automatic)
    instance action and how its compute event ended.

    ``result`` is None while the compute has not finished. ``details`` and
    ``changes`` come from the compute's change record of the request when
    there is one, else from the event (Nova keeps event details only for
    failures).
    """

    request_id: str
    user_id: str | None
    start_time: datetime.datetime | None
    finish_time: datetime.datetime | None
    result: str | None
    details: str | None
    changes: dict[str, tuple[int, int]]
    # An ``xloud-autosize`` action (the autopilot's, no user), and the
    # reason it gave.
    automatic: bool = False
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class MinimumsOutcome:
    """What applying a flavor's minimums did with one instance."""

    server_id: str
    cell: str
    result: str
    below_minimum: bool
    recorded: bool
    current_vcpus: int | None
    current_memory_mb: int | None
    message: str | None

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> MinimumsOutcome:
        return cls(server_id=body['server_id'], cell=body['cell'],
                   result=body['result'],
                   below_minimum=body['below_minimum'],
                   recorded=body['recorded'],
                   current_vcpus=body.get('current_vcpus'),
                   current_memory_mb=body.get('current_memory_mb'),
                   message=body.get('message'))


@dataclasses.dataclass(frozen=True)
class MinimumsReport:
    """How the instances of a flavor stand against its minimums.

    ``current`` carry them in their embedded flavor (which governs them),
    ``stale`` carry others, ``busy`` of those have an operation in
    progress. After an apply, ``updated`` and ``servers`` say what it
    did.
    """

    flavor_id: str
    instances: int
    current: int
    stale: int
    busy: int
    below_minimum: int
    memory_floor_mb: int
    errors: tuple[str, ...] = ()
    updated: int | None = None
    servers: tuple[MinimumsOutcome, ...] = ()

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> MinimumsReport:
        return cls(flavor_id=body['flavor']['id'],
                   instances=body['instances'], current=body['current'],
                   stale=body['stale'], busy=body['busy'],
                   below_minimum=body['below_minimum'],
                   memory_floor_mb=body['memory_floor_mb'],
                   errors=tuple(body.get('errors') or ()),
                   updated=body.get('updated'),
                   servers=tuple(MinimumsOutcome.from_api(server)
                                 for server in body.get('servers') or ()))


def _positive_int(raw: Any) -> int | None:
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        return None
    return value if value >= 1 else None


def _minimum(specs: dict[str, str], key: str, maximum: int) -> int | None:
    """A flavor's minimum as the extension reads it
    (``nova_ext.sizing.flavor_minimum``): the scoped key wins over the
    seed's, a value above the flavor's size is capped to it."""
    for name in (key, LEGACY_KEYS[key]):
        if name in specs:
            value = _positive_int(specs[name])
            return None if value is None else min(value, maximum)
    return None


def _memory_model(specs: dict[str, str]) -> str:
    """A flavor's memory model as the extension reads it
    (``nova_ext.sizing.memory_model``): a value it does not know counts as
    the balloon."""
    value = specs.get(MEMORY_MODEL, MEMORY_MODEL_BALLOON)
    return value if value in MEMORY_MODELS else MEMORY_MODEL_BALLOON


def _autosize(specs: dict[str, str]) -> str | None:
    """A flavor's ``xloud:autosize`` as the extension reads it
    (``nova_ext.sizing.autosize_dimensions``): None for no value or one it
    does not know."""
    value = specs.get(AUTOSIZE)
    return value if value in AUTOSIZE_VALUES else None


def _parse_time(raw: str | None) -> datetime.datetime | None:
    if not raw:
        return None
    value = datetime.datetime.fromisoformat(raw.replace('Z', '+00:00'))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value


def parse_details(details: str | None) -> dict[str, tuple[int, int]]:
    """``'vcpus 2 -> 4, memory_mb 2048 -> 3072'`` as ``{key: (old, new)}``."""
    return {match['key']: (int(match['old']), int(match['new']))
            for match in _DETAILS_RE.finditer(details or '')}


def compute_endpoint(request) -> str:
    """Nova's endpoint from the user's catalog, in the user's region."""
    return base.url_for(request, 'compute')


@memoized.memoized
def compute_proxy(request) -> openstack.proxy.Proxy:
    """The openstacksdk compute proxy of this request's user."""
    verify = (False if settings.OPENSTACK_SSL_NO_VERIFY
              else settings.OPENSTACK_SSL_CACERT or True)
    auth = token_endpoint.Token(endpoint=compute_endpoint(request),
                                token=request.user.token.id)
    session = ksa_session.Session(
        auth=auth, verify=verify,
        original_ip=auth_utils.get_client_ip(request))
    connection = openstack.connection.Connection(
        session=session, region_name=request.user.services_region,
        app_name='xloud-dashboard',
        app_version=importlib.metadata.version('horizon'))
    return connection.compute


def _call(request, method: str, path: str, *, microversion: str,
          **kwargs: Any) -> dict[str, Any]:
    proxy = compute_proxy(request)
    try:
        response = proxy.request(path, method, microversion=microversion,
                                 raise_exc=False, **kwargs)
        openstack.exceptions.raise_from_response(response)
    except openstack.exceptions.HttpException as exc:
        status = exc.status_code
        message = exc.details or exc.message or str(exc)
        error_class = {401: Unauthorized, 404: NotFound}.get(status, ApiError)
        raise error_class(message, status) from exc
    except ksa_exceptions.ClientException as exc:
        raise ApiError(str(exc)) from exc
    if not response.content:
        return {}
    return response.json()


def _get(request, path: str, microversion: str, **kwargs: Any):
    return _call(request, 'GET', path, microversion=microversion, **kwargs)


T = TypeVar('T')
R = TypeVar('R')


def _concurrently(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    items = list(items)
    if len(items) <= 1:
        return [function(item) for item in items]
    workers = min(MAX_WORKERS, len(items))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))


def is_extension_offered(request) -> bool:
    """Whether the cloud answers the extension's list call.

    The answer is kept in the session for ``EXTENSION_CHECK_TTL`` seconds,
    per compute endpoint, because the navigation asks on every page.
    """
    try:
        endpoint = compute_endpoint(request)
    except horizon_exceptions.ServiceCatalogException:
        return False
    cached = request.session.get(_EXTENSION_SESSION_KEY)
    now = time.time()
    if (cached and cached.get('endpoint') == endpoint
            and now - cached.get('checked_at', 0) < EXTENSION_CHECK_TTL):
        return cached['offered']
    try:
        _get(request, EXTENSION_PATH, EXTENSION_MICROVERSION,
             params={'limit': 1})
        offered = True
    except ApiError:
        offered = False
    request.session[_EXTENSION_SESSION_KEY] = {
        'endpoint': endpoint, 'checked_at': now, 'offered': offered}
    return offered


def _remember_refusal(request, session_key: str) -> None:
    """Keep in the session that this compute endpoint refused a feature."""
    request.session[session_key] = {'endpoint': compute_endpoint(request),
                                    'refused_at': time.time()}


def _refused_recently(request, session_key: str) -> bool:
    """Whether this compute endpoint refused the feature kept under
    ``session_key`` within EXTENSION_CHECK_TTL; answered from the session,
    without a call."""
    refused = request.session.get(session_key)
    if not refused:
        return False
    try:
        endpoint = compute_endpoint(request)
    except horizon_exceptions.ServiceCatalogException:
        return True
    return (refused.get('endpoint') == endpoint and
            time.time() - refused.get('refused_at', 0) < EXTENSION_CHECK_TTL)


def readiness_offered(request) -> bool:
    """False while the extension refused ``?readiness=true`` recently
    (older than readiness), per compute endpoint."""
    return not _refused_recently(request, _READINESS_REFUSED_SESSION_KEY)


def instance_size_list(request, *, marker: str | None = None,
                       filters: dict[str, str] | None = None,
                       paginate: bool = True, readiness: bool = False
                       ) -> tuple[list[InstanceSize], bool]:
    """One page of every project's instances, in one call.

    Returns the instances and whether a further page exists. With
    ``readiness`` each carries its guest view, readiness, utilisation and
    recommendation (``?readiness=true``, read from the compute hosts);
    an extension older than readiness refuses the parameter (400): the
    page is asked again without it, and the refusal kept in the session
    for EXTENSION_CHECK_TTL seconds.
    """
    params: dict[str, Any] = {'all_tenants': 1}
    params.update({key: value for key, value in (filters or {}).items()
                   if value})
    page_size = horizon_utils.get_page_size(request)
    if paginate:
        # One extra row tells whether there is a next page.
        params['limit'] = page_size + 1
    if marker:
        params['marker'] = marker
    if readiness and readiness_offered(request):
        try:
            body = _get(request, EXTENSION_PATH, EXTENSION_MICROVERSION,
                        params={**params, 'readiness': 'true'})
        except ApiError as exc:
            if exc.status_code != 400:
                raise
            # Refused for the parameter only if the page comes without it
            # (a bad marker is refused either way).
            body = _get(request, EXTENSION_PATH, EXTENSION_MICROVERSION,
                        params=params)
            _remember_refusal(request, _READINESS_REFUSED_SESSION_KEY)
    else:
        body = _get(request, EXTENSION_PATH, EXTENSION_MICROVERSION,
                    params=params)
    sizes = [InstanceSize.from_api(server) for server in body['servers']]
    if paginate and len(sizes) > page_size:
        return sizes[:page_size], True
    return sizes, False


def instance_size_get(request, server_id: str) -> InstanceSize:
    """One instance's size, live from its compute host when it answers."""
    body = _get(request, f'{EXTENSION_PATH}/{server_id}',
                EXTENSION_MICROVERSION)
    return InstanceSize.from_api(body['server'])


def instance_sizes_get(request, server_ids: Iterable[str]
                       ) -> dict[str, InstanceSize | ApiError]:
    """Several instances' sizes, fetched concurrently; errors per id."""
    compute_proxy(request)

    def fetch(server_id: str) -> InstanceSize | ApiError:
        try:
            return instance_size_get(request, server_id)
        except ApiError as exc:
            return exc

    server_ids = list(server_ids)
    return dict(zip(server_ids, _concurrently(fetch, server_ids),
                    strict=True))


def audit_offered(request) -> bool:
    """False while the cloud refused the audit to this user recently
    (the table asks it for every row it renders)."""
    return not _refused_recently(request, _AUDIT_REFUSED_SESSION_KEY)


def instance_sync_states(request, server_ids: Iterable[str]
                         ) -> dict[str, SyncState] | None:
    """Audit these instances in one call; their states by id.

    Instances that are not elastic are not in the answer. None when the
    cloud does not offer the audit to this user: its policy refuses
    (403) or its extension predates the audit (404); that answer is kept
    in the session for EXTENSION_CHECK_TTL seconds.
    """
    server_ids = list(server_ids)
    if not server_ids:
        return {}
    if not audit_offered(request):
        return None
    try:
        body = _get(request, AUDIT_PATH, EXTENSION_MICROVERSION,
                    params={'server_id': server_ids})
    except ApiError as exc:
        if exc.status_code not in (403, 404):
            raise
        _remember_refusal(request, _AUDIT_REFUSED_SESSION_KEY)
        return None
    report = body['audit']
    findings: dict[str, list[DriftFinding]] = {}
    for finding in report['remaining']:
        findings.setdefault(finding['server_id'], []).append(
            DriftFinding.from_api(finding))
    reasons = {skipped['server_id']: skipped['reason']
               for skipped in report['skipped']}
    states = {}
    for server in report['servers']:
        server_id = server['server_id']
        found = tuple(findings.get(server_id, ()))
        reason = reasons.get(server_id)
        if reason is None and server['status'] == SYNC_UNKNOWN:
            # Its host did not answer: the finding says so.
            reason = ' '.join(finding.message for finding in found)
        states[server_id] = SyncState(
            status=server['status'],
            findings=found if server['status'] == SYNC_DRIFT else (),
            reason=reason if server['status'] == SYNC_UNKNOWN else None)
    return states


def with_sync_states(request, sizes: list[InstanceSize]
                     ) -> list[InstanceSize] | None:
    """The sizes with their audit state, in one call; None when the cloud
    does not offer the audit to this user.

    A failed audit (nova-api or a host in trouble) leaves every elastic
    row's state unknown, with the error as the reason.
    """
    try:
        states = instance_sync_states(request, [size.id for size in sizes])
    except ApiError as exc:
        unknown = SyncState(SYNC_UNKNOWN, reason=exc.message)
        return [dataclasses.replace(size, sync=unknown)
                if _is_elastic(size) else size for size in sizes]
    if states is None:
        return None
    return [dataclasses.replace(size, sync=states.get(size.id))
            for size in sizes]


def fix_drift(request, server_id: str) -> DriftFix:
    """Heal one instance's drift (``POST /os-xloud-audit`` with ``fix``),
    and what became of it: the audit runs again on what was healed."""
    body = _call(request, 'POST', AUDIT_PATH,
                 microversion=EXTENSION_MICROVERSION,
                 json={'fix': True, 'server_ids': [server_id]})
    return DriftFix.from_report(server_id, body['audit'])


def locked_server_ids(request) -> set[str]:
    """The ids of every locked server, from Nova's server list filtered by
    ``locked`` (microversion 2.73): ids only, few calls whatever the size
    of the cloud (Nova pages them by ``[api] max_limit``)."""
    locked = set()
    params: dict[str, Any] = {'all_tenants': 1, 'locked': 'true'}
    while True:
        body = _get(request, '/servers', LOCK_MICROVERSION, params=params)
        servers = body.get('servers') or []
        locked.update(server['id'] for server in servers)
        more = any(link.get('rel') == 'next'
                   for link in body.get('servers_links') or ())
        if not more or not servers:
            return locked
        params = {**params, 'marker': servers[-1]['id']}


def with_lock_states(request, sizes: list[InstanceSize]
                     ) -> list[InstanceSize]:
    """The sizes with whether each instance is locked, in one call."""
    if not sizes:
        return sizes
    locked = locked_server_ids(request)
    return [dataclasses.replace(size, locked=size.id in locked)
            for size in sizes]


def server_lock_state(request, server_id: str) -> tuple[bool, str | None]:
    """Whether Nova has the server locked, and the reason it was given."""
    body = _get(request, f'/servers/{server_id}', LOCK_MICROVERSION)
    server = body['server']
    return bool(server.get('locked')), server.get('locked_reason')


def with_lock_state(request, size: InstanceSize) -> InstanceSize:
    locked, reason = server_lock_state(request, size.id)
    return dataclasses.replace(size, locked=locked, locked_reason=reason)


def _is_elastic(size: InstanceSize) -> bool:
    return (size.flavor.minimum_cpu is not None or
            size.flavor.minimum_memory is not None)


def adjust(request, server_id: str, *, vcpus: int | None = None,
           memory_mb: int | None = None,
           persist: bool = True) -> dict[str, Any]:
    """Ask for a new size; Nova answers 202 and the compute applies it."""
    body: dict[str, Any] = {'persist': persist}
    if vcpus is not None:
        body['current_vcpus'] = vcpus
    if memory_mb is not None:
        body['current_memory_mb'] = memory_mb
    answer = _call(request, 'POST', f'{EXTENSION_PATH}/{server_id}',
                   microversion=EXTENSION_MICROVERSION, json=body)
    return answer.get('adjustment', {})


def autopilot_set(request, server_id: str,
                  dimensions: Iterable[str] | None,
                  mode: str | None) -> AutopilotSetting:
    """Set what the autopilot sizes of one instance and in which mode
    (``PUT /os-xloud-adjust/{id}/autopilot``).

    ``dimensions`` None follows the flavor's ``xloud:autosize``, empty
    opts the instance out; ``mode`` None follows its host's. Nova answers
    409 when a dimension cannot be adjusted for the instance.
    """
    body = {'autopilot': {
        'dimensions': None if dimensions is None else list(dimensions),
        'mode': mode}}
    answer = _call(request, 'PUT', f'{EXTENSION_PATH}/{server_id}/autopilot',
                   microversion=EXTENSION_MICROVERSION, json=body)
    return AutopilotSetting.from_api(answer['autopilot'])


def adjust_many(request, requests: Iterable[AdjustRequest]
                ) -> list[AdjustOutcome]:
    """Send several adjustments concurrently; one outcome per request."""
    compute_proxy(request)

    def send(item: AdjustRequest) -> AdjustOutcome:
        try:
            adjust(request, item.server_id, vcpus=item.vcpus,
                   memory_mb=item.memory_mb, persist=item.persist)
        except ApiError as exc:
            return AdjustOutcome(item, accepted=False, error=exc.message)
        return AdjustOutcome(item, accepted=True)

    return _concurrently(send, requests)


def flavor_list(request) -> list[Flavor]:
    """Every flavor, public and private, with its extra specs."""
    body = _get(request, '/flavors/detail', FLAVOR_MICROVERSION,
                params={'is_public': 'None'})
    return [Flavor.from_nova(flavor) for flavor in body['flavors']]


def flavor_get(request, flavor_id: str) -> Flavor:
    body = _get(request, f'/flavors/{flavor_id}', FLAVOR_MICROVERSION)
    return Flavor.from_nova(body['flavor'])


def flavor_set_minimums(request, flavor_id: str, *,
                        minimum_cpu: int | None,
                        minimum_memory: int | None,
                        memory_model: str | None = None,
                        autosize: str | None = None) -> None:
    """Write the minimums as the scoped extra specs; None removes one.

    The seed's unscoped key of each minimum is deleted once the scoped
    one is written (or when the minimum is removed): it is read only
    where the scoped key is absent, and an unscoped key is taken for a
    host requirement by Nova's aggregate and capabilities filters.

    ``memory_model`` (None: left as it is) is written only when it
    changes; the balloon, the default, by removing the key. The values
    go in one POST, which Nova's API validates together (a virtio-mem
    flavor's minimum must be whole blocks): a refusal changes nothing.

    ``autosize`` (None: left as it is) is what the autopilot sizes, an
    ``xloud:autosize`` value written only when it changes, or
    AUTOSIZE_NONE to remove the key.
    """
    values = {MINIMUM_CPU: minimum_cpu, MINIMUM_MEMORY: minimum_memory}
    path = f'/flavors/{flavor_id}/os-extra_specs'
    present = _get(request, path, FLAVOR_MICROVERSION).get(
        'extra_specs') or {}
    to_set = {key: str(value) for key, value in values.items()
              if value is not None}
    to_delete = [key for key, value in values.items() if value is None]
    held = present.get(MEMORY_MODEL)
    if memory_model == MEMORY_MODEL_BALLOON:
        if held is not None:
            to_delete.insert(0, MEMORY_MODEL)
        if to_set and held not in (None, MEMORY_MODEL_BALLOON):
            # The minimums are validated against the model they will be
            # under, not the one the key is deleted from afterwards.
            to_set[MEMORY_MODEL] = MEMORY_MODEL_BALLOON
    elif memory_model is not None and held != memory_model:
        to_set[MEMORY_MODEL] = memory_model
    if autosize == AUTOSIZE_NONE:
        to_delete.append(AUTOSIZE)
    elif autosize is not None and present.get(AUTOSIZE) != autosize:
        to_set[AUTOSIZE] = autosize
    if to_set:
        _call(request, 'POST', path, microversion=FLAVOR_MICROVERSION,
              json={'extra_specs': to_set})
    to_delete += [LEGACY_KEYS[key] for key in values]
    for key in to_delete:
        if key not in present:
            continue
        # Deleted meanwhile: nothing left to clear.
        with contextlib.suppress(NotFound):
            _call(request, 'DELETE', f'{path}/{key}',
                  microversion=FLAVOR_MICROVERSION)


def flavor_minimums_get(request, flavor_id: str) -> MinimumsReport:
    """How many instances of the flavor carry its minimums (one call)."""
    body = _get(request, f'{FLAVOR_MINIMUMS_PATH}/{flavor_id}',
                EXTENSION_MICROVERSION)
    return MinimumsReport.from_api(body['flavor_minimums'])


def flavor_minimums_apply(request, flavor_id: str) -> MinimumsReport:
    """Apply the flavor's minimums to its instances; what became of each
    one that did not carry them."""
    body = _call(request, 'POST',
                 f'{FLAVOR_MINIMUMS_PATH}/{flavor_id}/action',
                 microversion=EXTENSION_MICROVERSION, json={'apply': {}})
    return MinimumsReport.from_api(body['flavor_minimums'])


def adjustment_history(request, server_id: str,
                       changes: Iterable[SizeChange] | None = None
                       ) -> list[HistoryEntry]:
    """The newest adjustments of one instance, newest first: manual ones
    and the autopilot's, each marked which, the autopilot's with its
    reason (its event's name, else its change record).

    ``changes`` are the instance's change records when the caller has
    them already (``instance_size_get(...).changes``); otherwise the
    single GET is one more call.
    """
    if changes is None:
        changes = instance_size_get(request, server_id).changes
    recorded = {change.request_id: change for change in changes}
    path = f'/servers/{server_id}/os-instance-actions'
    body = _get(request, path, ACTION_MICROVERSION)
    actions = [action for action in body['instanceActions']
               if action['action'] in HISTORY_ACTIONS][:HISTORY_LIMIT]

    def detail(action: dict[str, Any]) -> HistoryEntry:
        shown = _get(request, f"{path}/{action['request_id']}",
                     ACTION_MICROVERSION)['instanceAction']
        automatic = action['action'] == AUTO_ACTION
        events = shown.get('events') or []
        if automatic:
            event = next((event for event in events
                          if event['event'].startswith(AUTO_EVENT)), {})
        else:
            event = next((event for event in events
                          if event['event'] == ADJUST_EVENT), {})
        change = recorded.get(action['request_id'])
        reason = None
        if automatic:
            # 'compute_xloud_autosize: <reason>' (cut at 255 characters).
            reason = event.get('event', '')[len(AUTO_EVENT):].lstrip(
                ': ').strip() or None
        if change is not None:
            details = change.details
            if automatic:
                details, _sep, recorded_reason = details.partition(
                    AUTO_RECORD_SEPARATOR)
                reason = reason or recorded_reason or None
            # 'failed, applied vcpus 2 -> 3, not persisted: <why>': only
            # what precedes the reason was applied.
            changed = parse_details(details.partition(':')[0])
        else:
            # Older than the records, pruned, or not finished: a failed
            # event's details still say what was applied, if anything.
            details = event.get('details') or shown.get('message')
            changed = parse_details(details)
        return HistoryEntry(
            request_id=action['request_id'],
            user_id=action.get('user_id'),
            start_time=_parse_time(action.get('start_time')),
            finish_time=_parse_time(event.get('finish_time')),
            result=event.get('result'),
            details=details,
            changes=changed,
            automatic=automatic,
            reason=reason)

    compute_proxy(request)
    return _concurrently(detail, actions)


HOST_EXPOSURE_PATH = '/os-xloud-host-exposure'


@dataclasses.dataclass(frozen=True)
class ExposureDimension:
    """One resource of one compute host, as placement counts it: its
    capacity, what is allocated, and what its elastic guests would add at
    their maximum (``headroom``; ``potential`` is the sum)."""

    capacity: int
    allocated: int
    headroom: int
    potential: int
    over_capacity: bool
    total: int
    reserved: int
    allocation_ratio: float

    @classmethod
    def from_api(cls, body: dict[str, Any] | None
                 ) -> ExposureDimension | None:
        if body is None:
            return None
        return cls(capacity=body['capacity'], allocated=body['allocated'],
                   headroom=body['headroom'], potential=body['potential'],
                   over_capacity=body['over_capacity'], total=body['total'],
                   reserved=body['reserved'],
                   allocation_ratio=body['allocation_ratio'])


@dataclasses.dataclass(frozen=True)
class HostExposure:
    """The burst exposure of one compute host (one compute node);
    ``error`` when placement could not be read for it."""

    host: str
    node: str
    resource_provider: str
    elastic_instances: int
    vcpus: ExposureDimension | None
    memory_mb: ExposureDimension | None
    over_capacity: bool
    error: str | None = None

    @property
    def id(self) -> str:
        return self.resource_provider

    @property
    def name(self) -> str:
        """The host, and its node when that is named otherwise."""
        if self.node == self.host:
            return self.host
        return f'{self.host} ({self.node})'

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> HostExposure:
        return cls(host=body['host'], node=body['node'],
                   resource_provider=body['resource_provider'],
                   elastic_instances=body['elastic_instances'],
                   vcpus=ExposureDimension.from_api(body['vcpus']),
                   memory_mb=ExposureDimension.from_api(body['memory_mb']),
                   over_capacity=body['over_capacity'],
                   error=body.get('error'))


def host_exposure_list(request, host: str | None = None
                       ) -> tuple[list[HostExposure], tuple[str, ...]]:
    """Every compute host's burst exposure (or ``host``'s), in one call,
    with the errors that left hosts out."""
    params = {'host': host} if host else {}
    body = _get(request, HOST_EXPOSURE_PATH, EXTENSION_MICROVERSION,
                params=params)
    report = body['host_exposure']
    return ([HostExposure.from_api(node) for node in report['hosts']],
            tuple(report.get('errors') or ()))
