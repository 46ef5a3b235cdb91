"""The autopilot's decisions: which guests to grow or shrink, and why
(doc/autopilot.md).

Pure: samples of what each guest showed (balloon statistics, busy vCPUs)
and the time come in, decisions with an operator's reason come out. The
caller takes the samples, checks placement, quota and the instance's
state, makes the changes through the ordinary adjustment path and reports
each one back with ``GuestHistory.changed``.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from nova.i18n import _

from nova_ext import compatibility, sizing

VCPUS = compatibility.VCPUS
MEMORY = compatibility.MEMORY
DIMENSIONS = (VCPUS, MEMORY)

GROW = 'grow'
SHRINK = 'shrink'
HOLD = 'hold'
SKIPPED = 'skipped'
DIRECTIONS = (GROW, SHRINK)

MODE_OFF = sizing.AUTOPILOT_OFF
MODE_RECOMMEND = sizing.AUTOPILOT_RECOMMEND
MODE_ON = sizing.AUTOPILOT_ON
MODES = sizing.AUTOPILOT_MODES

MEMORY_STEP_MB = sizing.MEMORY_STEP_MB
# What a shrink leaves the guest at least above what it uses (one Linux
# memory block, as a virtio-mem shrink does).
SHRINK_MARGIN_MB = sizing.VIRTIO_MEM_SHRINK_MARGIN_MB


@dataclasses.dataclass(frozen=True)
class Sample:
    """One observation of one guest at ``at`` (seconds, monotonic).

    ``vcpus`` and ``memory_mb`` are what it runs with; ``usable_mb`` what
    its balloon statistics call usable (None when it sends none); the
    counters are cumulative, as virDomainMemoryStats reports them
    ('major_fault', 'swap_in', 'swap_out'; None when absent);
    ``busy_vcpus`` the vCPUs busy on average since the previous sample
    (None when not measured); ``online_vcpus`` the vCPUs the guest runs
    online, as its guest agent says (None without one);
    ``steal_vcpus`` the vCPUs' worth of time the host kept them waiting
    in its run queue since the previous sample (None when not measured).
    """

    at: float
    vcpus: int
    memory_mb: int
    usable_mb: int | None = None
    major_faults: int | None = None
    swap_in_kib: int | None = None
    swap_out_kib: int | None = None
    busy_vcpus: float | None = None
    online_vcpus: int | None = None
    steal_vcpus: float | None = None

    def __post_init__(self) -> None:
        if self.vcpus < 1 or self.memory_mb < 1:
            raise ValueError(_('A sample needs at least 1 vCPU and 1 MiB, '
                               'not %(vcpus)s and %(memory)s.') % {
                                   'vcpus': self.vcpus,
                                   'memory': self.memory_mb})
        for name in ('usable_mb', 'major_faults', 'swap_in_kib',
                     'swap_out_kib', 'busy_vcpus', 'online_vcpus',
                     'steal_vcpus'):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(_('A sample\'s %(name)s cannot be negative '
                                   '(%(value)s).') % {'name': name,
                                                      'value': value})

    def size(self, dimension: str) -> int:
        return self.vcpus if dimension == VCPUS else self.memory_mb


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Where a guest's size may go: [floor, max] per dimension, vCPUs in
    multiples of ``vcpu_step``, memory in multiples of ``memory_step_mb``
    (the flavor's own floor and maximum excepted); ``fixed`` says why a
    dimension is not adjustable at all."""

    floor_vcpus: int
    max_vcpus: int
    floor_memory_mb: int
    max_memory_mb: int
    vcpu_step: int = 1
    memory_step_mb: int = MEMORY_STEP_MB
    fixed: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (1 <= self.floor_vcpus <= self.max_vcpus and
                1 <= self.floor_memory_mb <= self.max_memory_mb and
                self.vcpu_step >= 1 and self.memory_step_mb >= 1):
            raise ValueError(_('Bounds need 1 <= floor <= max and steps of '
                               'at least 1: %s') % (self,))

    @classmethod
    def of(cls, size: sizing.ElasticSize) -> Bounds:
        step = size.vcpu_step
        # A core keeps all of its threads: the floor rounds up, the
        # maximum down, to whole steps.
        floor_vcpus = math.ceil(size.floor_vcpus / step) * step
        max_vcpus = max(size.max_vcpus // step * step, step)
        return cls(floor_vcpus=min(floor_vcpus, max_vcpus),
                   max_vcpus=max_vcpus,
                   floor_memory_mb=size.floor_memory_mb,
                   max_memory_mb=size.max_memory_mb,
                   vcpu_step=step,
                   fixed=dict(size.conflicts))

    def floor(self, dimension: str) -> int:
        return self.floor_vcpus if dimension == VCPUS else (
            self.floor_memory_mb)

    def maximum(self, dimension: str) -> int:
        return self.max_vcpus if dimension == VCPUS else self.max_memory_mb


@dataclasses.dataclass(frozen=True)
class Params:
    """The autopilot's configuration (``[xloud_autopilot]``); times in
    seconds, bands in percent."""

    mode: str = MODE_OFF
    interval: float = 60
    min_samples: int = 3
    max_samples: int = 64
    window_seconds: float = 1800
    memory_low_percent: float = 15
    memory_high_percent: float = 40
    major_faults_per_second: float = 100.0
    swap_in_kib_per_second: float = 1024.0
    memory_min_step_mb: int = 256
    vcpu_low_percent: float = 30
    vcpu_high_percent: float = 80
    vcpu_steal_percent: float = 10
    grow_after: float = 180
    shrink_after: float = 900
    cooldown: float = 300
    reverse_cooldown: float = 1800
    host_memory_reserve_percent: float = 10

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(_('mode %(mode)s is none of %(modes)s') % {
                'mode': self.mode, 'modes': ', '.join(MODES)})
        for low, high in (('memory_low_percent', 'memory_high_percent'),
                          ('vcpu_low_percent', 'vcpu_high_percent')):
            if not 0 < getattr(self, low) < getattr(self, high) <= 100:
                problems.append(_('%(low)s must be above 0 and below '
                                  '%(high)s, at most 100') % {
                                      'low': low, 'high': high})
        for shorter, longer in (('grow_after', 'shrink_after'),
                                ('cooldown', 'reverse_cooldown'),
                                ('shrink_after', 'window_seconds'),
                                ('min_samples', 'max_samples')):
            if not 0 <= getattr(self, shorter) <= getattr(self, longer):
                problems.append(_('%(shorter)s must be at least 0 and at '
                                  'most %(longer)s') % {
                                      'shorter': shorter, 'longer': longer})
        if self.min_samples < 2:
            problems.append(_('min_samples must be at least 2'))
        if self.interval <= 0:
            problems.append(_('interval must be above 0'))
        if (self.memory_min_step_mb <= 0 or
                self.memory_min_step_mb % MEMORY_STEP_MB):
            problems.append(_('memory_min_step_mb must be a positive '
                              'multiple of %d') % MEMORY_STEP_MB)
        if not 0 <= self.vcpu_steal_percent <= 100:
            problems.append(_('vcpu_steal_percent must be at least 0 and '
                              'at most 100'))
        if not 0 <= self.host_memory_reserve_percent < 100:
            problems.append(_('host_memory_reserve_percent must be at '
                              'least 0 and below 100'))
        if self.major_faults_per_second < 0 or (
                self.swap_in_kib_per_second < 0):
            problems.append(_('major_faults_per_second and '
                              'swap_in_kib_per_second cannot be negative'))
        if problems:
            raise ValueError(_('Invalid [xloud_autopilot] '
                               'configuration: %s.') % '; '.join(problems))

    @classmethod
    def from_conf(cls, conf) -> Params:
        group = conf.xloud_autopilot
        return cls(**{field.name: getattr(group, field.name)
                      for field in dataclasses.fields(cls)})

    def middle(self, dimension: str) -> float:
        """The middle of a dimension's band, which changes aim at."""
        if dimension == VCPUS:
            return (self.vcpu_low_percent + self.vcpu_high_percent) / 2
        return (self.memory_low_percent + self.memory_high_percent) / 2


class GuestHistory:
    """The newest samples of one guest (at most ``max_samples``, none
    older than ``window_seconds`` before the newest) and its last change
    per dimension."""

    def __init__(self, max_samples: int, window_seconds: float) -> None:
        if max_samples < 2 or window_seconds <= 0:
            raise ValueError(_('A history keeps at least 2 samples over '
                               'more than 0 seconds.'))
        self._window = window_seconds
        self._samples: collections.deque[Sample] = collections.deque(
            maxlen=max_samples)
        self._changes: dict[str, tuple[str, float]] = {}

    @classmethod
    def for_params(cls, params: Params) -> GuestHistory:
        return cls(params.max_samples, params.window_seconds)

    @property
    def samples(self) -> tuple[Sample, ...]:
        return tuple(self._samples)

    def add(self, sample: Sample) -> None:
        if self._samples:
            newest = self._samples[-1]
            if sample.at <= newest.at:
                raise ValueError(_('A sample at %(at)s is not newer than '
                                   'the newest one, at %(newest)s.') % {
                                       'at': sample.at, 'newest': newest.at})
            if _counters_reset(newest, sample):
                # The guest restarted (a reboot, a new QEMU process): its
                # counters and what it showed before say nothing of now.
                self._samples.clear()
        self._samples.append(sample)
        while self._samples[0].at < sample.at - self._window:
            self._samples.popleft()

    def changed(self, dimension: str, direction: str, at: float) -> None:
        """Record that ``dimension`` was changed in ``direction`` at
        ``at`` (by the autopilot or anyone else)."""
        _check_dimensions((dimension,))
        if direction not in DIRECTIONS:
            raise ValueError(_('A change is a grow or a shrink, not '
                               '%s.') % direction)
        last = self._changes.get(dimension)
        if last is not None and at < last[1]:
            raise ValueError(_('A change at %(at)s is older than the last '
                               'one, at %(last)s.') % {'at': at,
                                                      'last': last[1]})
        self._changes[dimension] = (direction, at)

    def last_change(self, dimension: str) -> tuple[str, float] | None:
        """(direction, at) of the dimension's last change, if any."""
        return self._changes.get(dimension)


def _counters_reset(previous: Sample, sample: Sample) -> bool:
    for name in ('major_faults', 'swap_in_kib', 'swap_out_kib'):
        before, now = getattr(previous, name), getattr(sample, name)
        if before is not None and now is not None and now < before:
            return True
    return False


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the autopilot decided for one dimension of one guest.

    ``action`` is GROW or SHRINK (to ``target``), HOLD (nothing called
    for), or SKIPPED (a change was called for and is not made: ``target``
    is the size it would have had); ``reason`` says why, with figures.
    """

    dimension: str
    action: str
    current: int | None
    target: int | None
    reason: str


@dataclasses.dataclass(frozen=True)
class Guest:
    """One guest of a host, as ``plan_host`` takes them."""

    uuid: str
    history: GuestHistory
    bounds: Bounds
    dimensions: Sequence[str] = DIMENSIONS


def decide(history: GuestHistory, bounds: Bounds, params: Params,
           now: float, *, dimensions: Iterable[str] = DIMENSIONS,
           room: Mapping[str, int] | None = None,
           host_short_of_memory: bool = False) -> list[Decision]:
    """One decision per dimension asked for, in DIMENSIONS order.

    ``room`` is what placement has free on the host per dimension: a grow
    beyond it is skipped. ``host_short_of_memory`` lets idle memory be
    shrunk after ``grow_after`` rather than ``shrink_after``.
    """
    wanted = set(dimensions)
    _check_dimensions(wanted)
    _check_room(room)
    decisions = []
    for dimension in DIMENSIONS:
        if dimension not in wanted:
            continue
        decision = _decide(history, bounds, params, now, dimension,
                           host_short_of_memory)
        if decision.action == GROW and room is not None:
            decision = _fit(decision, room.get(dimension))
        decisions.append(decision)
    return decisions


def plan_host(guests: Iterable[Guest], params: Params, now: float, *,
              host_free_memory_mb: int, host_memory_mb: int,
              room: Mapping[str, int] | None = None,
              ) -> list[tuple[str, Decision]]:
    """The decisions for every guest of a host, in the order to make them.

    Shrinks come first (memory before vCPUs, by instance uuid), then the
    other decisions by uuid. When the host's free memory is below
    ``host_memory_reserve_percent`` of it, idle guests are shrunk sooner;
    in any case a memory grow is made only while the memory free, with
    what the shrinks before it free, stays above the reserve, and a grow
    only while placement's ``room`` (shared by the host's guests) lasts.
    """
    if host_memory_mb < 1 or not 0 <= host_free_memory_mb <= host_memory_mb:
        raise ValueError(_('A host needs some memory and free memory '
                           'between none and all of it, not %(free)s of '
                           '%(total)s MiB.') % {'free': host_free_memory_mb,
                                               'total': host_memory_mb})
    _check_room(room)
    reserve_mb = host_memory_mb * params.host_memory_reserve_percent / 100
    short = host_free_memory_mb < reserve_mb
    planned = []
    for guest in sorted(guests, key=lambda guest: guest.uuid):
        for decision in decide(guest.history, guest.bounds, params, now,
                               dimensions=guest.dimensions,
                               host_short_of_memory=short):
            planned.append((guest.uuid, decision))

    def order(item: tuple[str, Decision]) -> tuple[int, str, int]:
        uuid, decision = item
        rank = 2
        if decision.action == SHRINK:
            rank = 0 if decision.dimension == MEMORY else 1
        return rank, uuid, DIMENSIONS.index(decision.dimension)

    planned.sort(key=order)
    free = dict(room or {})
    spare_mb = host_free_memory_mb - reserve_mb
    result = []
    for uuid, decision in planned:
        change = (decision.target or 0) - (decision.current or 0)
        if decision.action == SHRINK:
            # Credited as made: the shrinks come first, and the adjustment
            # path checks placement again for each grow anyway.
            if decision.dimension in free:
                free[decision.dimension] -= change
            if decision.dimension == MEMORY:
                spare_mb -= change
        elif decision.action == GROW:
            if room is not None:
                decision = _fit(decision, free.get(decision.dimension))
            if decision.action == GROW and decision.dimension == MEMORY and (
                    change > spare_mb):
                decision = _skip(decision, _(
                    'the host has %(free)d MiB free and keeps %(reserve)d '
                    'MiB (%(percent)s%%) in reserve, which leaves '
                    '%(spare)d MiB for grows') % {
                        'free': host_free_memory_mb,
                        'spare': max(spare_mb, 0), 'reserve': reserve_mb,
                        'percent': params.host_memory_reserve_percent})
            if decision.action == GROW:
                if decision.dimension in free:
                    free[decision.dimension] -= change
                if decision.dimension == MEMORY:
                    spare_mb -= change
        result.append((uuid, decision))
    return result


def _check_dimensions(dimensions: Iterable[str]) -> None:
    unknown = sorted(set(dimensions) - set(DIMENSIONS))
    if unknown:
        raise ValueError(_('Unknown dimensions %(unknown)s; known: '
                           '%(known)s.') % {'unknown': ', '.join(unknown),
                                            'known': ', '.join(DIMENSIONS)})


def _check_room(room: Mapping[str, int] | None) -> None:
    if room is None:
        return
    _check_dimensions(room)
    if any(value < 0 for value in room.values()):
        raise ValueError(_('Room on a host cannot be negative: %s') % room)


def _fit(decision: Decision, room: int | None) -> Decision:
    """``decision`` (a grow), or skipped when placement has no room."""
    needed = decision.target - decision.current
    if room is None or needed <= room:
        return decision
    return _skip(decision, _('it needs %(needed)d more and placement has '
                             '%(room)d free on the host') % {
                                 'needed': needed, 'room': room})


def _skip(decision: Decision, reason: str) -> Decision:
    return dataclasses.replace(
        decision, action=SKIPPED, reason=_('%(decision)s; skipped: '
                                           '%(reason)s.') % {
            'decision': decision.reason.rstrip('.'), 'reason': reason})


def _change_text(dimension: str, current: int, target: int) -> str:
    if dimension == VCPUS:
        return _('vcpus %(current)d → %(target)d') % {
            'current': current, 'target': target}
    return _('memory %(current)d → %(target)d MiB') % {
        'current': current, 'target': target}


def _size_text(dimension: str, size: int) -> str:
    if dimension == VCPUS:
        return _('vcpus %d') % size
    return _('memory %d MiB') % size


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 60 and not seconds % 60:
        return _('%d min') % (seconds // 60)
    return _('%d s') % seconds


@dataclasses.dataclass(frozen=True)
class _Run:
    """The newest samples, at the newest size, that show one signal."""

    samples: tuple[Sample, ...]

    @property
    def seconds(self) -> float:
        if not self.samples:
            return 0
        return self.samples[-1].at - self.samples[0].at


def _run(samples: Sequence[Sample],
         shows: Callable[[Sample | None, Sample], bool]) -> _Run:
    """The trailing samples for which ``shows(previous, sample)`` holds
    (``previous`` being the sample before, or None)."""
    start = len(samples)
    while start > 0:
        previous = samples[start - 2] if start > 1 else None
        if not shows(previous, samples[start - 1]):
            break
        start -= 1
    return _Run(tuple(samples[start:]))


def _decide(history: GuestHistory, bounds: Bounds, params: Params,
            now: float, dimension: str, short: bool) -> Decision:
    samples = history.samples
    if not samples:
        return Decision(dimension, HOLD, None, None,
                        _('No sample of the guest yet.'))
    newest = samples[-1]
    current = newest.size(dimension)

    def hold(reason: str) -> Decision:
        return Decision(dimension, HOLD, current, current, reason)

    if dimension in bounds.fixed:
        return hold(_('Not adjustable: %s') % bounds.fixed[dimension])
    if now - newest.at > 2 * params.interval:
        return hold(_('No sample for %(age)s (the newest is older than two '
                      'intervals).') % {'age': _duration(now - newest.at)})
    # A change (the autopilot's or anyone's, reported with
    # GuestHistory.changed) resets what the signals say about the size. A
    # size the guest moved by itself does not: a balloon deflating on OOM
    # is the pressure itself.
    last = history.last_change(dimension)
    same = [sample for sample in samples
            if last is None or sample.at > last[1]]
    if len(same) < params.min_samples:
        return hold(_('%(count)d of the %(needed)d samples needed since '
                      'the last change.') % {'count': len(same),
                                             'needed': params.min_samples})
    if dimension == MEMORY:
        return _decide_memory(history, bounds, params, now, same, short,
                              hold)
    return _decide_vcpus(history, bounds, params, now, same, hold)


def _usable_percent(sample: Sample) -> float | None:
    # Usable at or above the whole size: statistics from before the
    # balloon last moved (they come once a period).
    if sample.usable_mb is None or sample.usable_mb >= sample.memory_mb:
        return None
    return sample.usable_mb * 100 / sample.memory_mb


def _rate(previous: Sample | None, sample: Sample, name: str) -> float | None:
    if previous is None:
        return None
    before, now = getattr(previous, name), getattr(sample, name)
    if before is None or now is None:
        return None
    return (now - before) / (sample.at - previous.at)


def _memory_pressure(params: Params, previous: Sample | None,
                     sample: Sample) -> str | None:
    """What shows the guest short of memory in ``sample``, if anything."""
    usable = _usable_percent(sample)
    if usable is not None and usable < params.memory_low_percent:
        return _('usable %(usable)d%% < %(low)s%%') % {
            'usable': usable, 'low': params.memory_low_percent}
    faults = _rate(previous, sample, 'major_faults')
    if params.major_faults_per_second and faults is not None and (
            faults > params.major_faults_per_second):
        return _('%(rate).0f major faults/s > %(limit)s') % {
            'rate': faults, 'limit': params.major_faults_per_second}
    swap_in = _rate(previous, sample, 'swap_in_kib')
    if params.swap_in_kib_per_second and swap_in is not None and (
            swap_in > params.swap_in_kib_per_second):
        return _('swap-in %(rate).0f KiB/s > %(limit)s') % {
            'rate': swap_in, 'limit': params.swap_in_kib_per_second}
    return None


def _round_up(value: float, step: int) -> int:
    return math.ceil(value / step) * step


def _decide_memory(history: GuestHistory, bounds: Bounds, params: Params,
                   now: float, same: Sequence[Sample], short: bool,
                   hold: Callable[[str], Decision]) -> Decision:
    newest = same[-1]
    current = newest.memory_mb
    usable = _usable_percent(newest)
    if newest.usable_mb is None:
        return hold(_('The guest sends no memory statistics (balloon '
                      'driver); memory is not sized automatically.'))
    if usable is None:
        return hold(_('The guest\'s memory statistics predate the '
                      'balloon\'s last move.'))
    low, high = params.memory_low_percent, params.memory_high_percent
    pressed = _run(same, lambda previous, sample: _memory_pressure(
        params, previous, sample) is not None)
    if pressed.samples:
        signal = _memory_pressure(params, same[-2], newest)
        if (pressed.seconds < params.grow_after or
                len(pressed.samples) < params.min_samples):
            return hold(_('%(signal)s for %(seconds)s; grows after '
                          '%(after)s.') % {
                              'signal': signal,
                              'seconds': _duration(pressed.seconds),
                              'after': _duration(params.grow_after)})
        # What the guest used at its peak, from the samples with
        # statistics (the newest has them).
        used = max(sample.memory_mb - sample.usable_mb
                   for sample in pressed.samples
                   if _usable_percent(sample) is not None)
        target = _round_up(max(used * 100 / (100 - params.middle(MEMORY)),
                               current + params.memory_min_step_mb),
                           bounds.memory_step_mb)
        target = min(target, bounds.max_memory_mb)
        why = _('%(signal)s for %(seconds)s') % {
            'signal': signal, 'seconds': _duration(pressed.seconds)}
        return _checked(history, bounds, params, now, MEMORY, GROW,
                        current, target, why)
    idle = _run(same, lambda previous, sample: (
        (_usable_percent(sample) or 0) > high and
        _memory_pressure(params, previous, sample) is None))
    wait = params.grow_after if short else params.shrink_after
    if not idle.samples:
        return hold(_('usable %(usable)d%% within %(low)s-%(high)s%%.') % {
            'usable': usable, 'low': low, 'high': high})
    signal = _('usable %(usable)d%% > %(high)s%%') % {
        'usable': usable, 'high': high}
    if idle.seconds < wait or len(idle.samples) < params.min_samples:
        return hold(_('%(signal)s for %(seconds)s; shrinks after '
                      '%(after)s.') % {
                          'signal': signal,
                          'seconds': _duration(idle.seconds),
                          'after': _duration(wait)})
    used = max(sample.memory_mb - sample.usable_mb for sample in idle.samples)
    target = _round_up(max(used * 100 / (100 - params.middle(MEMORY)),
                           used + SHRINK_MARGIN_MB), bounds.memory_step_mb)
    target = max(target, bounds.floor_memory_mb)
    why = _('%(signal)s for %(seconds)s') % {
        'signal': signal, 'seconds': _duration(idle.seconds)}
    if short:
        why = _('%s, the host short of memory') % why
    # Back to the floor is always worth it (a guest whose balloon
    # deflated on OOM may hold a little above it).
    if target > bounds.floor_memory_mb and (
            current - target < params.memory_min_step_mb):
        return hold(_('%(why)s, but a shrink to %(target)d MiB would free '
                      'less than %(step)d MiB.') % {
                          'why': why, 'target': target,
                          'step': params.memory_min_step_mb})
    return _checked(history, bounds, params, now, MEMORY, SHRINK, current,
                    target, why)


def _decide_vcpus(history: GuestHistory, bounds: Bounds, params: Params,
                  now: float, same: Sequence[Sample],
                  hold: Callable[[str], Decision]) -> Decision:
    newest = same[-1]
    current = newest.vcpus
    if newest.busy_vcpus is None:
        return hold(_('The guest\'s vCPU use is not measured yet.'))
    if newest.online_vcpus is not None and newest.online_vcpus < current:
        # More vCPUs would stay offline too, and fewer would take away
        # ones it may bring up: the guest has to online them first.
        return hold(_('The guest runs %(online)d of its %(vcpus)d vCPUs '
                      'online; vCPUs are not sized until it runs them '
                      'all.') % {'online': newest.online_vcpus,
                                 'vcpus': current})
    low, high = params.vcpu_low_percent, params.vcpu_high_percent

    def busy_percent(sample: Sample) -> float | None:
        if sample.busy_vcpus is None:
            return None
        return sample.busy_vcpus * 100 / sample.vcpus

    figures = {'busy': newest.busy_vcpus, 'current': current,
               'percent': busy_percent(newest), 'low': low, 'high': high}
    busy = _run(same, lambda previous, sample: (
        (busy_percent(sample) or 0) > high))
    idle = _run(same, lambda previous, sample: (
        busy_percent(sample) is not None and busy_percent(sample) < low))
    step = bounds.vcpu_step
    if busy.samples:
        signal = _('%(busy).1f of %(current)d busy (%(percent)d%% > '
                   '%(high)s%%)') % figures
        run, wait, direction = busy, params.grow_after, GROW
        target = min(current // step * step + step, bounds.max_vcpus)
    elif idle.samples:
        signal = _('%(busy).1f of %(current)d busy (%(percent)d%% < '
                   '%(low)s%%)') % figures
        run, wait, direction = idle, params.shrink_after, SHRINK
        target = max(math.ceil(current / step) * step - step,
                     bounds.floor_vcpus)
    else:
        return hold(_('%(busy).1f of %(current)d busy (%(percent)d%%) '
                      'within %(low)s-%(high)s%%.') % figures)
    if run.seconds < wait or len(run.samples) < params.min_samples:
        return hold(_('%(signal)s for %(seconds)s; %(direction)s after '
                      '%(after)s.') % {
                          'signal': signal, 'seconds': _duration(run.seconds),
                          'direction': (_('grows') if direction == GROW
                                        else _('shrinks')),
                          'after': _duration(wait)})
    why = _('%(signal)s for %(seconds)s') % {
        'signal': signal, 'seconds': _duration(run.seconds)}
    steal = newest.steal_vcpus
    if direction == GROW and params.vcpu_steal_percent and (
            steal is not None and
            steal * 100 / current > params.vcpu_steal_percent):
        # The host cannot run the vCPUs the guest has: more would only
        # wait as well, and take from its neighbours.
        return hold(_('%(why)s, but the host keeps %(steal).1f of its '
                      'vCPUs waiting (steal %(percent)d%% > %(limit)s%%).')
                    % {'why': why, 'steal': steal,
                       'percent': steal * 100 / current,
                       'limit': params.vcpu_steal_percent})
    if direction == SHRINK and current > bounds.floor_vcpus:
        peak = max(sample.busy_vcpus for sample in run.samples)
        if peak * 100 / target > params.middle(VCPUS):
            return hold(_('%(why)s, but %(target)d vCPUs would be busier '
                          'than %(middle)s%% (%(peak).1f busy at '
                          'most).') % {'why': why, 'target': target,
                                       'middle': params.middle(VCPUS),
                                       'peak': peak})
    return _checked(history, bounds, params, now, VCPUS, direction, current,
                    target, why)


def _checked(history: GuestHistory, bounds: Bounds, params: Params,
             now: float, dimension: str, direction: str, current: int,
             target: int, why: str) -> Decision:
    """The change the signals call for, or why it is skipped."""
    change = _change_text(dimension, current, target)

    def skipped(reason: str) -> Decision:
        return Decision(dimension, SKIPPED, current, target,
                        _('%(change)s: %(why)s; skipped: %(reason)s.') % {
                            'change': change, 'why': why, 'reason': reason})

    if direction == GROW and current >= bounds.maximum(dimension):
        change = _size_text(dimension, current)
        return skipped(_('at the maximum'))
    if direction == SHRINK and current <= bounds.floor(dimension):
        change = _size_text(dimension, current)
        return skipped(_('at the floor'))
    last = history.last_change(dimension)
    if last is not None:
        last_direction, at = last
        since = now - at
        if since < params.cooldown:
            return skipped(_('changed %(since)s ago, cooldown '
                             '%(cooldown)s') % {
                                 'since': _duration(since),
                                 'cooldown': _duration(params.cooldown)})
        # Only a shrink waits out a grow: a guest short of memory (or
        # CPU) right after a shrink is grown back after the cooldown.
        if direction == SHRINK and last_direction == GROW and (
                since < params.reverse_cooldown):
            return skipped(_('grown %(since)s ago, no shrink within '
                             '%(reverse)s') % {
                                 'since': _duration(since),
                                 'reverse': _duration(
                                     params.reverse_cooldown)})
    return Decision(dimension, direction, current, target,
                    _('%(change)s: %(why)s.') % {'change': change,
                                                 'why': why})
