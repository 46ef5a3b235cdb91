"""An instance's elastic size: its flavor's limits and its recorded size.

The flavor's ``vcpus``/``memory_mb`` are the maximum; its
``xloud:minimum_cpu`` / ``xloud:minimum_memory`` extra specs are the size a
guest boots at and the floor of any adjustment. A flavor without them
boots at its maximum, as stock Nova does, and is not elastic unless
``[xloud] allow_shrink_without_minimum`` lets it be adjusted down to
``[xloud] vcpu_floor`` / ``memory_floor_mb``, which no memory size ever
goes below.

What nova-compute confirmed with libvirt is kept in the instance's system
metadata (it travels with the instance through every move and is loaded in
the same query as the instance). The record is tagged with the flavor it was
made for, so after a resize the guest starts over from the new flavor.
Two sizes are kept: the *boot* size, written into the domain whenever Nova
regenerates it (hard reboot, start, unshelve, migrations), changed only by
persistent adjustments; and the *live* size, what the guest runs at now.

What each adjustment changed is kept there too, one ``xloud_change_<request
id>`` key per request, the newest :data:`CHANGE_HISTORY_LIMIT`: Nova keeps
an instance action event's details only for failures, and nova-compute has
no database of its own to keep them elsewhere.
"""

from __future__ import annotations

import dataclasses
import datetime

from nova import exception, objects
from nova.compute import task_states
from oslo_log import log as logging
from oslo_utils import timeutils

from nova_ext import compatibility, conf

LOG = logging.getLogger(__name__)
CONF = conf.CONF

# Scoped, as Nova's own keys are: Nova's AggregateInstanceExtraSpecsFilter
# (and ComputeCapabilitiesFilter) take every unscoped key for a
# requirement the host must meet.
MINIMUM_CPU = 'xloud:minimum_cpu'
MINIMUM_MEMORY = 'xloud:minimum_memory'
# The seed deployment's unscoped keys, still read where the scoped one is
# absent, with a deprecation warning; ``xloud-flavor-sync --migrate-keys``
# rewrites them.
LEGACY_KEYS = {MINIMUM_CPU: 'minimum_cpu', MINIMUM_MEMORY: 'minimum_memory'}
# How memory is added and taken away (doc/flavors.md): the balloon
# (the guest boots with the flavor's memory and gives back what the
# balloon asks for), or a virtio-mem device (the guest boots with its
# minimum and blocks are plugged and unplugged).
MEMORY_MODEL = 'xloud:memory_model'
MEMORY_MODEL_BALLOON = 'balloon'
MEMORY_MODEL_VIRTIO_MEM = 'virtio-mem'
MEMORY_MODELS = (MEMORY_MODEL_BALLOON, MEMORY_MODEL_VIRTIO_MEM)
# virtio-mem plugs x86-64 guest memory in blocks of 2 MiB (Linux's
# pageblock size there).
VIRTIO_MEM_BLOCK_MB = 2
# What a virtio-mem shrink leaves the guest above what it uses: one of
# Linux's x86-64 memory blocks (blocks once unplugged do not come back).
VIRTIO_MEM_SHRINK_MARGIN_MB = 128
# Recommended and automatic memory sizes are multiples of this: a Linux
# memory block, and a whole number of virtio-mem blocks.
MEMORY_STEP_MB = 128

SYSMETA_FLAVOR = 'xloud_flavorid'
SYSMETA_BOOT_VCPUS = 'xloud_boot_vcpus'
SYSMETA_BOOT_MEMORY = 'xloud_boot_memory_mb'
SYSMETA_LIVE_VCPUS = 'xloud_live_vcpus'
SYSMETA_LIVE_MEMORY = 'xloud_live_memory_mb'
SYSMETA_UPDATED_AT = 'xloud_updated_at'
# The boot size recorded for the flavor an instance had before its last
# resize: a revert returns to it (Nova keeps old_vm_state the same way).
SYSMETA_PREVIOUS_FLAVOR = 'xloud_previous_flavorid'
SYSMETA_PREVIOUS_BOOT_VCPUS = 'xloud_previous_boot_vcpus'
SYSMETA_PREVIOUS_BOOT_MEMORY = 'xloud_previous_boot_memory_mb'
SYSMETA_STATUS = 'xloud_status'
SYSMETA_REQUEST_ID = 'xloud_request_id'
SYSMETA_ERROR = 'xloud_error'
SYSMETA_CHANGE_PREFIX = 'xloud_change_'

# How many change records an instance keeps; older ones are pruned in the
# save that adds a new one.
CHANGE_HISTORY_LIMIT = 20

STATUS_ADJUSTING = 'adjusting'
STATUS_SUCCESS = 'success'
STATUS_ERROR = 'error'
# libvirt applied the size, but the guest does not run with all of it
# (vCPUs it keeps offline), or whether it does could not be read.
STATUS_PARTIAL = 'partial'

# What the guest itself showed when the compute last read it (the end of
# an adjustment): whether its QEMU guest agent answered, the vCPUs it had
# online, the memory its kernel manages and what its programs could still
# use (balloon statistics), and when. Empty values: not known.
SYSMETA_GUEST_AGENT = 'xloud_guest_agent'
SYSMETA_GUEST_ONLINE_VCPUS = 'xloud_guest_online_vcpus'
SYSMETA_GUEST_AVAILABLE_MEMORY = 'xloud_guest_available_memory_mb'
SYSMETA_GUEST_USABLE_MEMORY = 'xloud_guest_usable_memory_mb'
SYSMETA_GUEST_AS_OF = 'xloud_guest_as_of'
_GUEST_KEYS = (SYSMETA_GUEST_AGENT, SYSMETA_GUEST_ONLINE_VCPUS,
               SYSMETA_GUEST_AVAILABLE_MEMORY, SYSMETA_GUEST_USABLE_MEMORY,
               SYSMETA_GUEST_AS_OF)
# The guest agent, as the API reports it: it answered; the domain has its
# channel but nothing answers (not running in the guest, or not started
# yet); the domain has no channel (the image does not ask for one).
# When the guest last started (any path that starts its domain), and when
# it last arrived by live migration since then ('' when it did not): a
# guest started before a live migration may not online vCPUs plugged on
# its new host (doc/readiness.md).
SYSMETA_STARTED_AT = 'xloud_started_at'
SYSMETA_MIGRATED_AT = 'xloud_migrated_at'

GUEST_AGENT_ANSWERING = 'answering'
GUEST_AGENT_NOT_ANSWERING = 'not_answering'
GUEST_AGENT_NOT_CONFIGURED = 'not_configured'
GUEST_AGENT_STATES = (GUEST_AGENT_ANSWERING, GUEST_AGENT_NOT_ANSWERING,
                      GUEST_AGENT_NOT_CONFIGURED)

# Automatic sizing (nova_ext.autopilot): the flavor's opt-in names the
# dimensions the autopilot sizes; an instance's override replaces it
# ('none' opts the instance out) and may hold its mode below the host's.
AUTOSIZE = 'xloud:autosize'
AUTOSIZE_CPU = 'cpu'
AUTOSIZE_MEMORY = 'memory'
AUTOSIZE_VALUES = ('memory', 'cpu', 'memory,cpu')
AUTOSIZE_NONE = 'none'
AUTOSIZE_DIMENSIONS = {AUTOSIZE_CPU: compatibility.VCPUS,
                       AUTOSIZE_MEMORY: compatibility.MEMORY}
SYSMETA_AUTOSIZE = 'xloud_autosize'
SYSMETA_AUTOSIZE_MODE = 'xloud_autosize_mode'
AUTOPILOT_OFF = 'off'
AUTOPILOT_RECOMMEND = 'recommend'
AUTOPILOT_ON = 'on'
# In order: an instance never runs a mode above its host's.
AUTOPILOT_MODES = (AUTOPILOT_OFF, AUTOPILOT_RECOMMEND, AUTOPILOT_ON)
# The action and event of an automatic adjustment; the event's name
# carries the reason (Nova keeps an event's details only for failures).
AUTO_ACTION = 'xloud-autosize'
AUTO_EVENT = 'compute_xloud_autosize'
AUTO_EVENT_MAX = 255

# The instance action of an adjustment, its event on the compute host, and
# the event nova-api records when it could not hand the adjustment over.
ACTION = 'xloud-adjust'
EVENT = 'compute_xloud_adjust'
API_EVENT = 'api_xloud_adjust'
# The actions whose task state is ADJUSTING_TASK_STATE: a manual
# adjustment, and an automatic one.
ADJUST_ACTIONS = (ACTION, AUTO_ACTION)


def auto_event(reason: str) -> str:
    """The event name of an automatic adjustment made for ``reason``."""
    return f'{AUTO_EVENT}: {reason}'[:AUTO_EVENT_MAX]

# The task state of an instance while it is adjusted. Nova's task states
# are a closed enum (versioned notifications carry them as an
# InstanceTaskStateField), so this is Nova's own state of a resize being
# prepared: an adjustment is a live resize. While it is set Nova's API
# refuses its other operations on the instance (409), as during its own
# tasks; the instance's newest action (ACTION) tells it from a cold
# resize's.
ADJUSTING_TASK_STATE = task_states.RESIZE_PREP

# Nova's system_metadata values are limited to 255 characters.
_SYSMETA_VALUE_MAX = 255


_warned_legacy: set[tuple[str, str]] = set()


def flavor_minimum_spec(flavor: objects.Flavor,
                        key: str) -> tuple[str, str] | None:
    """The extra spec (name, value) that holds the minimum ``key``.

    The scoped key wins over the legacy one.
    """
    specs = flavor.extra_specs or {}
    for name in (key, LEGACY_KEYS[key]):
        if name in specs:
            if name != key and (flavor.flavorid, name) not in _warned_legacy:
                _warned_legacy.add((flavor.flavorid, name))
                LOG.warning('Flavor %(flavor)s uses the deprecated extra '
                            'spec %(legacy)s; set %(key)s instead '
                            '(xloud-flavor-sync --migrate-keys rewrites '
                            'it)', {'flavor': flavor.flavorid,
                                    'legacy': name, 'key': key})
            return name, specs[name]
    return None


def memory_model(flavor: objects.Flavor) -> str:
    """The flavor's memory model; the balloon unless it names another
    (a value Nova's validator would refuse counts as the balloon)."""
    value = (flavor.extra_specs or {}).get(MEMORY_MODEL,
                                           MEMORY_MODEL_BALLOON)
    return value if value in MEMORY_MODELS else MEMORY_MODEL_BALLOON


def flavor_minimum(flavor: objects.Flavor, key: str) -> int | None:
    """The flavor's minimum for ``key``, or None when it has none.

    Nova's API validates these specs since this extension is installed;
    a value written before that (not a positive integer) is ignored, and
    one above the flavor's own size is capped to it, never trusted.
    """
    found = flavor_minimum_spec(flavor, key)
    if found is None:
        return None
    name, raw = found
    maximum = flavor.vcpus if key == MINIMUM_CPU else flavor.memory_mb
    try:
        value = int(str(raw).strip())
    except ValueError:
        LOG.warning('Ignoring flavor %s extra spec %s=%r: not an integer',
                    flavor.flavorid, name, raw)
        return None
    if value < 1:
        LOG.warning('Ignoring flavor %s extra spec %s=%r: below 1',
                    flavor.flavorid, name, raw)
        return None
    return min(value, maximum)


def floors(flavor: objects.Flavor) -> tuple[int, int]:
    """The least vCPUs and MiB an instance of ``flavor`` may run with.

    The flavor's minimum; without one, the flavor's own size (it is not
    elastic) unless ``[xloud] allow_shrink_without_minimum``. Memory never
    goes below ``[xloud] memory_floor_mb`` (nor above the flavor's).
    """
    shrinkable = CONF.xloud.allow_shrink_without_minimum
    vcpus = flavor_minimum(flavor, MINIMUM_CPU) or (
        min(CONF.xloud.vcpu_floor, flavor.vcpus) if shrinkable
        else flavor.vcpus)
    memory = flavor_minimum(flavor, MINIMUM_MEMORY) or (
        1 if shrinkable else flavor.memory_mb)
    memory = min(max(memory, CONF.xloud.memory_floor_mb), flavor.memory_mb)
    return vcpus, memory



def autosize_dimensions(value: str | None) -> tuple[str, ...] | None:
    """The dimensions an ``xloud:autosize`` value (or an instance's
    override, which may be 'none') names; None for no or an invalid
    value (Nova's validator refuses those; older ones are ignored)."""
    if value is None:
        return None
    if value == AUTOSIZE_NONE:
        return ()
    if value not in AUTOSIZE_VALUES:
        return None
    named = value.split(',')
    return tuple(dimension for name, dimension in AUTOSIZE_DIMENSIONS.items()
                 if name in named)


def autosize_value(dimensions) -> str:
    """The spec value (or 'none') naming ``dimensions``."""
    names = [name for name, dimension in AUTOSIZE_DIMENSIONS.items()
             if dimension in set(dimensions)]
    if not names:
        return AUTOSIZE_NONE
    return ','.join(sorted(names, key=lambda name: name != AUTOSIZE_MEMORY))


@dataclasses.dataclass(frozen=True)
class Autosize:
    """Whether and how the autopilot sizes one instance.

    ``dimensions`` it sizes, from ``dimensions_from`` ('flavor',
    'instance' or None for neither); ``mode`` what it does with them on
    the instance's host (``host_mode`` limited by ``instance_mode``).
    """

    dimensions: tuple[str, ...]
    dimensions_from: str | None
    host_mode: str
    instance_mode: str | None
    mode: str


def autosize(instance: objects.Instance, host_mode: str) -> Autosize:
    """The autopilot's setting for ``instance`` on a host whose
    ``[xloud_autopilot] mode`` is ``host_mode``."""
    sysmeta = instance.system_metadata or {}
    dimensions = autosize_dimensions(sysmeta.get(SYSMETA_AUTOSIZE) or None)
    source = 'instance'
    if dimensions is None:
        dimensions = autosize_dimensions(
            (instance.flavor.extra_specs or {}).get(AUTOSIZE))
        source = 'flavor' if dimensions is not None else None
    dimensions = dimensions or ()
    instance_mode = sysmeta.get(SYSMETA_AUTOSIZE_MODE) or None
    if instance_mode not in AUTOPILOT_MODES:
        instance_mode = None
    mode = host_mode if host_mode in AUTOPILOT_MODES else AUTOPILOT_OFF
    if instance_mode is not None:
        mode = min(mode, instance_mode, key=AUTOPILOT_MODES.index)
    if not dimensions:
        mode = AUTOPILOT_OFF
    return Autosize(dimensions=dimensions, dimensions_from=source,
                    host_mode=host_mode, instance_mode=instance_mode,
                    mode=mode)

@dataclasses.dataclass(frozen=True)
class ElasticSize:
    """Limits and recorded sizes of one instance, all derived on read."""

    max_vcpus: int
    max_memory_mb: int
    minimum_vcpus: int | None
    minimum_memory_mb: int | None
    boot_vcpus: int
    boot_memory_mb: int
    live_vcpus: int
    live_memory_mb: int
    updated_at: datetime.datetime | None
    status: str | None
    request_id: str | None
    error: str | None

    # The least it may be adjusted to (``floors``).
    floor_vcpus: int
    floor_memory_mb: int

    # Why a dimension is not elastic for this instance
    # (``compatibility``), by ``compatibility.VCPUS`` / ``MEMORY``.
    conflicts: dict[str, str] = dataclasses.field(default_factory=dict)
    # vCPUs are adjusted in multiples of this (``compatibility.vcpu_step``).
    vcpu_step: int = 1
    # The flavor's MEMORY_MODEL: how a domain generated now gets its
    # memory (a running domain keeps the device it was started with).
    memory_model: str = MEMORY_MODEL_BALLOON

    @classmethod
    def from_instance(cls, instance: objects.Instance, *,
                      devices: bool = False) -> ElasticSize:
        """``devices`` also weighs the instance's PCI devices
        (``compatibility.instance_conflicts``)."""
        flavor = instance.flavor
        sysmeta = instance.system_metadata or {}
        conflicts = compatibility.instance_conflicts(
            instance, devices=devices, guest=False)
        min_vcpus = flavor_minimum(flavor, MINIMUM_CPU)
        min_memory = flavor_minimum(flavor, MINIMUM_MEMORY)
        floor_vcpus, floor_memory = floors(flavor)
        # A dimension the flavor or image makes non-elastic keeps the
        # flavor's size: no minimum, no floor below it.
        if compatibility.VCPUS in conflicts:
            min_vcpus, floor_vcpus = None, flavor.vcpus
        if compatibility.MEMORY in conflicts:
            min_memory, floor_memory = None, flavor.memory_mb
        default_vcpus = min_vcpus or flavor.vcpus
        default_memory = (floor_memory if min_memory is not None
                          else flavor.memory_mb)
        recorded = sysmeta.get(SYSMETA_FLAVOR) == flavor.flavorid
        if not recorded and sysmeta.get(SYSMETA_PREVIOUS_FLAVOR) == (
                flavor.flavorid):
            # Back to the flavor of before a resize (a revert): the boot
            # size recorded for it, which its domain starts at again.
            sysmeta = dict(sysmeta)
            sysmeta[SYSMETA_BOOT_VCPUS] = sysmeta.get(
                SYSMETA_PREVIOUS_BOOT_VCPUS, '')
            sysmeta[SYSMETA_BOOT_MEMORY] = sysmeta.get(
                SYSMETA_PREVIOUS_BOOT_MEMORY, '')
            for key in (SYSMETA_LIVE_VCPUS, SYSMETA_LIVE_MEMORY,
                        SYSMETA_UPDATED_AT):
                sysmeta.pop(key, None)
            recorded = True

        def _recorded(key: str, default: int, floor: int, ceiling: int):
            if not recorded or key not in sysmeta:
                return default
            try:
                value = int(sysmeta[key])
            except ValueError:
                return default
            return value if floor <= value <= ceiling else default

        boot_vcpus = _recorded(SYSMETA_BOOT_VCPUS, default_vcpus,
                               1, flavor.vcpus)
        boot_memory = _recorded(SYSMETA_BOOT_MEMORY, default_memory,
                                1, flavor.memory_mb)
        updated_at = sysmeta.get(SYSMETA_UPDATED_AT) if recorded else None
        return cls(
            max_vcpus=flavor.vcpus,
            max_memory_mb=flavor.memory_mb,
            minimum_vcpus=min_vcpus,
            minimum_memory_mb=min_memory,
            boot_vcpus=boot_vcpus,
            boot_memory_mb=boot_memory,
            live_vcpus=_recorded(SYSMETA_LIVE_VCPUS, boot_vcpus,
                                 1, flavor.vcpus),
            live_memory_mb=_recorded(SYSMETA_LIVE_MEMORY, boot_memory,
                                     1, flavor.memory_mb),
            updated_at=(timeutils.parse_isotime(updated_at)
                        if updated_at else None),
            status=sysmeta.get(SYSMETA_STATUS),
            request_id=sysmeta.get(SYSMETA_REQUEST_ID),
            error=sysmeta.get(SYSMETA_ERROR),
            floor_vcpus=floor_vcpus,
            floor_memory_mb=floor_memory,
            # What the guest showed holds live changes back too.
            conflicts={**compatibility.guest_conflicts(instance),
                       **conflicts},
            vcpu_step=compatibility.vcpu_step(
                flavor.extra_specs or {},
                compatibility.image_properties(instance)),
            memory_model=memory_model(flavor),
        )


@dataclasses.dataclass(frozen=True)
class GuestRecord:
    """What the guest showed when last read (see SYSMETA_GUEST_*)."""

    agent: str
    online_vcpus: int | None
    available_memory_mb: int | None
    usable_memory_mb: int | None
    as_of: datetime.datetime


def guest_record(instance: objects.Instance) -> GuestRecord | None:
    """The guest's view recorded for the instance, or None if none is."""
    sysmeta = instance.system_metadata or {}
    agent = sysmeta.get(SYSMETA_GUEST_AGENT)
    as_of = sysmeta.get(SYSMETA_GUEST_AS_OF)
    if agent not in GUEST_AGENT_STATES or not as_of:
        return None

    def number(key: str) -> int | None:
        try:
            return int(sysmeta.get(key, ''))
        except ValueError:
            return None

    try:
        read_at = timeutils.parse_isotime(as_of)
    except ValueError:
        LOG.warning('Ignoring malformed %s=%r', SYSMETA_GUEST_AS_OF, as_of,
                    instance=instance)
        return None
    return GuestRecord(
        agent=agent, online_vcpus=number(SYSMETA_GUEST_ONLINE_VCPUS),
        available_memory_mb=number(SYSMETA_GUEST_AVAILABLE_MEMORY),
        usable_memory_mb=number(SYSMETA_GUEST_USABLE_MEMORY),
        as_of=read_at)


def since_start(instance: objects.Instance) -> datetime.timedelta | None:
    """How long the guest has run, None when its start is not recorded
    (a guest started before this release recorded starts)."""
    started_at = recorded_time(instance, SYSMETA_STARTED_AT)
    if started_at is None:
        return None
    return timeutils.utcnow() - timeutils.normalize_time(started_at)


def virtio_mem_settling(instance: objects.Instance) -> bool:
    """Whether a virtio-mem guest may still be plugging what it booted
    with: its driver loads during boot, within ``[xloud]
    balloon_silent_after`` of its start."""
    running_for = since_start(instance)
    return running_for is not None and running_for <= datetime.timedelta(
        seconds=CONF.xloud.balloon_silent_after)


def recorded_time(instance: objects.Instance,
                  key: str) -> datetime.datetime | None:
    """A time the record keeps under ``key``, or None."""
    value = (instance.system_metadata or {}).get(key)
    if not value:
        return None
    try:
        return timeutils.parse_isotime(value)
    except ValueError:
        LOG.warning('Ignoring malformed %s=%r', key, value,
                    instance=instance)
        return None


@dataclasses.dataclass(frozen=True)
class Change:
    """What one adjustment request changed, as the compute recorded it."""

    request_id: str
    changed_at: datetime.datetime
    details: str


def changes(instance: objects.Instance) -> list[Change]:
    """The recorded changes of an instance, newest first."""
    found = []
    for key, value in (instance.system_metadata or {}).items():
        if not key.startswith(SYSMETA_CHANGE_PREFIX):
            continue
        stamp, separator, details = value.partition('|')
        try:
            changed_at = timeutils.parse_isotime(stamp)
        except ValueError:
            changed_at = None
        if not separator or changed_at is None:
            LOG.warning('Ignoring malformed change record %s=%r', key, value,
                        instance=instance)
            continue
        found.append(Change(request_id=key[len(SYSMETA_CHANGE_PREFIX):],
                            changed_at=changed_at, details=details))
    return sorted(found, key=lambda change: change.changed_at, reverse=True)


class RecordUpdate:
    """Changes to the elastic record in an instance's system metadata.

    Collected first and applied to an instance just read from the
    database (:func:`save_record`): Nova saves system metadata as a whole
    dict and deletes the keys missing from it, so a save from an older
    copy would erase what others wrote since.
    """

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self._change: tuple[str, str] | None = None

    def size(self, instance: objects.Instance, *, vcpus: int,
             memory_mb: int, boot_vcpus: int | None = None,
             boot_memory_mb: int | None = None) -> RecordUpdate:
        """Record the size libvirt reports: live, and boot when given.

        The first record for a flavor pins the boot size it had so far.
        """
        self.values.update({
            SYSMETA_FLAVOR: instance.flavor.flavorid,
            SYSMETA_LIVE_VCPUS: str(vcpus),
            SYSMETA_LIVE_MEMORY: str(memory_mb),
            SYSMETA_UPDATED_AT: timeutils.utcnow().isoformat(),
        })
        sysmeta = instance.system_metadata or {}
        first_record = sysmeta.get(SYSMETA_FLAVOR) != instance.flavor.flavorid
        if first_record and SYSMETA_FLAVOR in sysmeta:
            # A resize: keep the other flavor's boot size for a revert.
            self.values.update({
                SYSMETA_PREVIOUS_FLAVOR: sysmeta[SYSMETA_FLAVOR],
                SYSMETA_PREVIOUS_BOOT_VCPUS: sysmeta.get(
                    SYSMETA_BOOT_VCPUS, ''),
                SYSMETA_PREVIOUS_BOOT_MEMORY: sysmeta.get(
                    SYSMETA_BOOT_MEMORY, ''),
            })
        if first_record and (boot_vcpus is None or boot_memory_mb is None):
            current = ElasticSize.from_instance(instance)
            boot_vcpus = boot_vcpus or current.boot_vcpus
            boot_memory_mb = boot_memory_mb or current.boot_memory_mb
        if boot_vcpus is not None:
            self.values[SYSMETA_BOOT_VCPUS] = str(boot_vcpus)
        if boot_memory_mb is not None:
            self.values[SYSMETA_BOOT_MEMORY] = str(boot_memory_mb)
        return self

    def balloon(self, answered: bool, boot_memory_mb: int) -> RecordUpdate:
        """Record whether the guest took its balloon to the boot size.

        An unanswered balloon makes memory non-elastic for the instance
        (``compatibility.instance_conflicts``) until a boot answers it.
        """
        self.values[compatibility.SYSMETA_BALLOON_UNANSWERED] = (
            '' if answered else str(boot_memory_mb))
        return self

    def guest(self, agent: str, online_vcpus: int | None,
              available_memory_mb: int | None,
              usable_memory_mb: int | None) -> RecordUpdate:
        """Record what the guest itself showed just now."""
        if agent not in GUEST_AGENT_STATES:
            raise ValueError(f'unknown guest agent state {agent!r}')

        def text(value: int | None) -> str:
            return '' if value is None else str(value)

        self.values.update({
            SYSMETA_GUEST_AGENT: agent,
            SYSMETA_GUEST_ONLINE_VCPUS: text(online_vcpus),
            SYSMETA_GUEST_AVAILABLE_MEMORY: text(available_memory_mb),
            SYSMETA_GUEST_USABLE_MEMORY: text(usable_memory_mb),
            SYSMETA_GUEST_AS_OF: timeutils.utcnow().isoformat(),
        })
        return self

    def forget_guest(self) -> RecordUpdate:
        """The guest (re)started: what it showed before no longer holds."""
        self.values.update(dict.fromkeys(_GUEST_KEYS, ''))
        return self

    def started(self) -> RecordUpdate:
        """The guest started just now, and has not migrated since."""
        self.values.update({
            SYSMETA_STARTED_AT: timeutils.utcnow().isoformat(),
            SYSMETA_MIGRATED_AT: '',
        })
        return self

    def migrated(self) -> RecordUpdate:
        """The running guest arrived here by live migration just now."""
        self.values[SYSMETA_MIGRATED_AT] = timeutils.utcnow().isoformat()
        return self

    def forget_previous_flavor(self) -> RecordUpdate:
        """A resize was confirmed: there is no flavor to revert to."""
        self.values[SYSMETA_PREVIOUS_FLAVOR] = ''
        return self

    def autosize(self, dimensions: tuple[str, ...] | None,
                 mode: str | None) -> RecordUpdate:
        """Set the instance's autopilot override: the dimensions it sizes
        (None: the flavor's) and its mode (None: its host's)."""
        if mode is not None and mode not in AUTOPILOT_MODES:
            raise ValueError(f'unknown autopilot mode {mode!r}')
        self.values.update({
            SYSMETA_AUTOSIZE: ('' if dimensions is None
                               else autosize_value(dimensions)),
            SYSMETA_AUTOSIZE_MODE: mode or '',
        })
        return self

    def status(self, status: str, request_id: str | None,
               error: str | None = None) -> RecordUpdate:
        """Record the state of the latest adjustment."""
        self.values.update({
            SYSMETA_STATUS: status,
            SYSMETA_REQUEST_ID: request_id or '',
            SYSMETA_ERROR: (error or '')[:_SYSMETA_VALUE_MAX],
        })
        return self

    def change(self, request_id: str, details: str) -> RecordUpdate:
        """Record what request ``request_id`` changed.

        The value is ``<UTC ISO time>|<details>``, cut to Nova's 255
        characters; only the newest CHANGE_HISTORY_LIMIT records are kept.
        """
        stamp = timeutils.utcnow().replace(tzinfo=None).isoformat()
        self._change = (SYSMETA_CHANGE_PREFIX + request_id,
                        f'{stamp}|{details}'[:_SYSMETA_VALUE_MAX])
        return self

    def apply_to(self, instance: objects.Instance) -> None:
        sysmeta = dict(instance.system_metadata or {})
        sysmeta.update(self.values)
        if self._change is not None:
            key, value = self._change
            sysmeta[key] = value
            instance.system_metadata = sysmeta
            for stale in changes(instance)[CHANGE_HISTORY_LIMIT:]:
                del sysmeta[SYSMETA_CHANGE_PREFIX + stale.request_id]
        instance.system_metadata = sysmeta

    def __bool__(self) -> bool:
        return bool(self.values) or self._change is not None


def save_record(instance: objects.Instance, update: RecordUpdate, *,
                expected_task_state: list | None = None,
                end_task: bool = False) -> None:
    """Read the instance again, apply ``update`` and save it.

    ``expected_task_state`` makes the save conditional (Nova's
    ``UnexpectedTaskStateError`` otherwise). ``end_task`` also clears the
    adjustment's task state; should another operation own the task state
    by then, the record is saved all the same, without touching it: the
    record must say what libvirt did.
    """
    instance.refresh()
    update.apply_to(instance)
    if not end_task:
        instance.save(expected_task_state=expected_task_state)
        return
    instance.task_state = None
    try:
        instance.save(expected_task_state=[ADJUSTING_TASK_STATE])
    except exception.UnexpectedTaskStateError:
        LOG.warning('The instance left the adjustment\'s task state before '
                    'it ended; recording its outcome only',
                    instance=instance)
        instance.refresh()
        update.apply_to(instance)
        instance.save()
