"""The guest's own view of its size, read from its serial console file."""

import dataclasses
import pathlib
import time
from collections.abc import Callable

from deploy.localcloud import guestimage as images


@dataclasses.dataclass(frozen=True)
class GuestView:
    """One status line the guest printed."""

    cpus: int
    memtotal_kb: int
    balloon_kb: int

    @property
    def usable_kb(self) -> int:
        """Memory the guest can use: MemTotal less what the balloon holds.

        With deflate-on-OOM negotiated the balloon's pages stay counted in
        MemTotal; without it the driver takes them out of MemTotal itself.
        """
        return self.memtotal_kb - self.balloon_kb


class GuestNotReady(AssertionError):
    """The guest did not print what was waited for in time."""


def _parse(fields: list[str]) -> dict[str, str]:
    return dict(field.partition('=')[::2] for field in fields)


class SerialConsole:
    """Follows the serial console file QEMU writes for one guest."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def lines(self) -> list[str]:
        """Complete lines only: QEMU may be halfway through the last one."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        complete, _, _ = raw.rpartition(b'\n')
        return complete.decode('utf-8', 'replace').replace(
            '\r', '').splitlines()

    def _records(self, kind: str) -> list[dict[str, str]]:
        records = []
        for line in self.lines():
            # The first line shares the console with the firmware's output.
            _, marker, rest = line.partition(images.STATUS_PREFIX + ' ')
            if not marker:
                continue
            words = rest.split()
            if words and words[0] == kind:
                records.append(_parse(words[1:]))
        return records

    def _views(self, kind: str) -> list[GuestView]:
        views = []
        for record in self._records(kind):
            # A kernel message can land in the middle of a line.
            try:
                views.append(GuestView(
                    cpus=int(record['cpus']),
                    memtotal_kb=int(record['memtotal_kb']),
                    balloon_kb=int(record['balloon_kb'])))
            except (KeyError, ValueError):
                continue
        return views

    def boot_view(self) -> GuestView | None:
        """The guest's size before it loaded any driver."""
        views = self._views('boot')
        return views[0] if views else None

    def errors(self) -> list[str]:
        """What ``/init`` reported failing (a module that did not load)."""
        marker = f'{images.STATUS_PREFIX} error '
        return [line.partition(marker)[2] for line in self.lines()
                if marker in line]

    def latest(self) -> GuestView | None:
        views = self._views('state')
        return views[-1] if views else None

    def wait_for(self, predicate: Callable[[GuestView], bool],
                 timeout: float, what: str) -> GuestView:
        """The first latest view that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.latest()
            if view is not None and predicate(view):
                return view
            if time.monotonic() > deadline:
                tail = '\n'.join(self.lines()[-15:])
                raise GuestNotReady(
                    f'guest did not show {what} within {timeout} s; '
                    f'last view {view}; console tail:\n{tail}')
            time.sleep(0.1)
