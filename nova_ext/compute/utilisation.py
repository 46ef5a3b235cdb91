"""How busy each guest's vCPUs are, from the CPU time libvirt counts.

The compute host takes a sample of every running domain's CPU time
(virDomainGetInfo's ``cpuTime``) at each resource update of Nova's
resource tracker (``[DEFAULT] update_resources_interval``, a minute by
default) and whenever readiness is asked for; the busy vCPUs over the
window are the CPU time used between the oldest sample in it and now,
per second of wall time. Kept in memory only: after a restart of
nova-compute the figure is back within a minute or two.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time

from nova_ext import conf

CONF = conf.CONF

_NS_PER_SECOND = 1e9
# Fewer seconds between two samples say more about the moment the admin
# looked than about the guest.
MIN_WINDOW_SECONDS = 30


@dataclasses.dataclass(frozen=True)
class Busy:
    """``vcpus`` busy on average over the last ``window_seconds``."""

    vcpus: float
    window_seconds: int


class CpuTimeSamples:
    """CPU time samples per domain (by instance uuid), thread safe."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._samples: dict[str, collections.deque] = {}

    def add(self, instance_uuid: str, cpu_time_ns: int) -> None:
        """Record the domain's CPU time now (0 for one not running)."""
        now = self._clock()
        window = CONF.xloud.utilisation_window_seconds
        with self._lock:
            samples = self._samples.setdefault(instance_uuid,
                                               collections.deque())
            if samples and cpu_time_ns < samples[-1][1]:
                # The QEMU process restarted (a reboot, a migration):
                # its count started again.
                samples.clear()
            samples.append((now, cpu_time_ns))
            # Keep one sample older than the window, so the window is
            # covered whole.
            while len(samples) > 2 and now - samples[1][0] >= window:
                samples.popleft()

    def busy(self, instance_uuid: str) -> Busy | None:
        """Busy vCPUs over the window, or None before it can be told."""
        now = self._clock()
        window = CONF.xloud.utilisation_window_seconds
        with self._lock:
            samples = list(self._samples.get(instance_uuid, ()))
        if len(samples) < 2:
            return None
        newest_at, newest = samples[-1]
        # The oldest sample within the window (the newest always is).
        taken_at, cpu_time_ns = next(
            sample for sample in samples if newest_at - sample[0] <= window)
        elapsed = newest_at - taken_at
        if elapsed < MIN_WINDOW_SECONDS or now - newest_at > window:
            return None
        return Busy(vcpus=round((newest - cpu_time_ns) /
                                (elapsed * _NS_PER_SECOND), 2),
                    window_seconds=int(elapsed))

    def keep_only(self, instance_uuids) -> None:
        """Forget the domains no longer here."""
        keep = set(instance_uuids)
        with self._lock:
            for gone in set(self._samples) - keep:
                del self._samples[gone]
