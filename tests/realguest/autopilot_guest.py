"""What the autopilot test runs inside and against its guest.

A program started through the QEMU guest agent (``guest-exec``) builds a
working set in a tmpfs of its own: tmpfs pages are neither reclaimable
nor swappable (the guest has no swap), so what it writes leaves the
guest's MemAvailable, the balloon statistics' ``usable``, as a program's
heap would. It reports each step on the serial console, as
``XLOUD-GUEST workset mb=N``.
"""

import base64
import dataclasses
import json
import time

import libvirt
import libvirt_qemu

from deploy.localcloud import guestimage as images
from nova_ext import autopilot
from nova_ext.virt import live

AGENT_COMMAND_TIMEOUT = 10
WORKSET_KIND = 'workset'


class AgentUnavailable(AssertionError):
    """The guest agent did not answer in time."""


def agent_command(domain: libvirt.virDomain, command: str,
                  arguments: dict | None = None) -> dict:
    """One guest agent command through libvirt; its ``return``."""
    request: dict = {'execute': command}
    if arguments is not None:
        request['arguments'] = arguments
    answer = libvirt_qemu.qemuAgentCommand(
        domain, json.dumps(request), AGENT_COMMAND_TIMEOUT, 0)
    return json.loads(answer)['return']


def wait_for_agent(domain: libvirt.virDomain, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            agent_command(domain, 'guest-ping')
            return
        except libvirt.libvirtError as exc:
            if time.monotonic() > deadline:
                raise AgentUnavailable(
                    f'the guest agent did not answer within {timeout} s: '
                    f'{exc}') from exc
        time.sleep(0.5)


@dataclasses.dataclass(frozen=True)
class Workset:
    """The program's shape: ``load_mb`` at once, then ``step_mb`` every
    ``step_seconds`` up to ``total_mb``, held ``hold_seconds``, freed."""

    load_mb: int
    total_mb: int
    step_mb: int
    step_seconds: float
    hold_seconds: float

    def script(self) -> str:
        """The busybox shell program; exits non-zero when a write fails
        (a full tmpfs, a killed ``dd``)."""
        say = f'echo "{images.STATUS_PREFIX} {WORKSET_KIND}'
        return f'''set -e
mkdir -p /workset
mount -t tmpfs -o size={self.total_mb + self.step_mb}m workset /workset
dd if=/dev/zero of=/workset/load bs=1M count={self.load_mb} 2>/dev/null
held={self.load_mb}
{say} mb=$held" > /dev/ttyS0
while [ $held -lt {self.total_mb} ]; do
    sleep {self.step_seconds:g}
    dd if=/dev/zero of=/workset/$held bs=1M count={self.step_mb} 2>/dev/null
    held=$((held + {self.step_mb}))
    {say} mb=$held" > /dev/ttyS0
done
sleep {self.hold_seconds:g}
rm /workset/*
umount /workset
{say} mb=0" > /dev/ttyS0
'''


@dataclasses.dataclass(frozen=True)
class ProgramStatus:
    exited: bool
    exitcode: int | None
    signal: int | None
    output: str


def start_program(domain: libvirt.virDomain, script: str) -> int:
    """Run ``script`` with the guest's busybox sh; its pid in the guest."""
    return agent_command(domain, 'guest-exec', {
        'path': '/bin/sh', 'arg': ['-c', script],
        'capture-output': True})['pid']


def program_status(domain: libvirt.virDomain, pid: int) -> ProgramStatus:
    """Once it reports the program exited, the agent forgets ``pid``."""
    status = agent_command(domain, 'guest-exec-status', {'pid': pid})
    output = ''.join(
        base64.b64decode(status.get(key, '')).decode('utf-8', 'replace')
        for key in ('out-data', 'err-data'))
    return ProgramStatus(exited=status['exited'],
                         exitcode=status.get('exitcode'),
                         signal=status.get('signal'), output=output)


def workset_reports(console_lines: list[str]) -> list[int]:
    """The MiB the program reported holding, in order."""
    marker = f'{images.STATUS_PREFIX} {WORKSET_KIND} mb='
    reports = []
    for line in console_lines:
        _, found, rest = line.partition(marker)
        words = rest.split()
        # A kernel message can land in the middle of a line.
        if found and words and words[0].isdigit():
            reports.append(int(words[0]))
    return reports


def workset_mb(console_lines: list[str]) -> int | None:
    """What the program last reported holding, None before it did."""
    reports = workset_reports(console_lines)
    return reports[-1] if reports else None


def out_of_memory_lines(console_lines: list[str]) -> list[str]:
    """The guest kernel's OOM reports (``quiet`` keeps its errors on the
    console: "Out of memory: Killed process ...")."""
    return [line for line in console_lines
            if 'Out of memory' in line or 'oom-kill' in line]


def balloon_kb_seen(console_lines: list[str]) -> list[int]:
    """The balloon sizes the guest's status lines showed, in order, each
    once per change."""
    seen: list[int] = []
    marker = f'{images.STATUS_PREFIX} state '
    for line in console_lines:
        _, found, rest = line.partition(marker)
        fields = dict(word.partition('=')[::2] for word in rest.split())
        value = fields.get('balloon_kb', '')
        if found and value.isdigit() and (not seen or
                                          seen[-1] != int(value)):
            seen.append(int(value))
    return seen


def sample(pressure: live.PressureSample, at: float) -> autopilot.Sample:
    """The engine's sample of what ``live.read_pressure`` read at ``at``
    (monotonic)."""
    return autopilot.Sample(
        at=at, vcpus=pressure.size.vcpus,
        memory_mb=pressure.size.memory_mb, usable_mb=pressure.usable_mb,
        major_faults=pressure.major_faults,
        swap_in_kib=pressure.swap_in_kib,
        swap_out_kib=pressure.swap_out_kib)
