"""Backup files of the RequestSpecs a sync rewrites.

A backup is JSON Lines, written and read as a stream so its size never
matters for memory::

    {"format": "xloud-flavor-sync-backup", "version": 1, "timestamp": ...}
    {"id": 7, "instance_uuid": "...", "spec": "<original>",
     "patch": [START, END, "<replacement of spec[START:END]>"]}
    ...
    {"records": 2, "sha256": "<sha256 of every byte above this line>"}

It holds only the rows the sync changes: the originals, and what replaced
them, which is both the sync's work list (it writes from the sealed file,
never from memory) and how a restore tells a row still as the sync left it
from one Nova rewrote since. What replaced a spec is kept as the one span
of it that changed (its embedded flavor; the whole spec when the sync had
to re-serialise it), which halves what is written, hashed and read back.

A backup is written to a temporary file in the backup directory, fsynced,
then linked to its final name, so it either exists complete or not at all;
files are created 0600 in a 0700 directory because specs carry project and
user ids.
"""

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from nova_ext.flavor_sync.spec import Patch, loads, orjson

FORMAT = 'xloud-flavor-sync-backup'
VERSION = 1
PREFIX = 'request_specs_'
SUFFIX = '.jsonl'
TIMESTAMP_FORMAT = '%Y%m%d_%H%M%S'


class BackupError(Exception):
    """A backup file cannot be used."""


@dataclasses.dataclass(frozen=True)
class BackupRecord:
    id: int
    instance_uuid: str
    spec: str
    patch: Patch

    @property
    def synced(self) -> str:
        """The spec the sync writes."""
        return self.patch.applied_to(self.spec)


@dataclasses.dataclass(frozen=True)
class BackupSummary:
    path: str
    timestamp: str
    records: int


def ensure_private_directory(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def _line(document: dict[str, Any]) -> bytes:
    if orjson is not None:
        return orjson.dumps(document, option=orjson.OPT_APPEND_NEWLINE)
    return (json.dumps(document) + '\n').encode('utf-8')


class BackupWriter:
    """Streams records into a new backup, published only when complete."""

    def __init__(self, directory: str, source: str) -> None:
        try:
            ensure_private_directory(directory)
            fd, self.temp_path = tempfile.mkstemp(
                prefix='.' + PREFIX, suffix='.tmp', dir=directory)
        except OSError as exc:
            raise BackupError(f'cannot create a backup in {directory}: '
                              f'{exc.strerror}') from None
        self.directory = directory
        self.timestamp = datetime.datetime.now().strftime(TIMESTAMP_FORMAT)
        self.records = 0
        self._digest = hashlib.sha256()
        os.fchmod(fd, 0o600)
        self._file: IO[bytes] = os.fdopen(fd, 'wb')
        self._write(_line({'format': FORMAT, 'version': VERSION,
                           'timestamp': self.timestamp, 'source': source}))

    def _write(self, data: bytes) -> None:
        self._digest.update(data)
        self._file.write(data)

    def add(self, record: BackupRecord) -> None:
        self._write(_line({'id': record.id,
                           'instance_uuid': record.instance_uuid,
                           'spec': record.spec,
                           'patch': list(record.patch)}))
        self.records += 1

    def close(self) -> str:
        """Seal the file and make it durable; returns its temporary path."""
        self.sha256 = self._digest.hexdigest()
        self._file.write(_line({'records': self.records,
                                'sha256': self.sha256}))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self.temp_path

    def publish(self) -> str:
        """Give the sealed file its final name, never replacing another."""
        for attempt in range(1000):
            suffix = f'_{attempt}' if attempt else ''
            path = os.path.join(
                self.directory,
                f'{PREFIX}{self.timestamp}{suffix}{SUFFIX}')
            try:
                os.link(self.temp_path, path)
            except FileExistsError:
                continue
            os.unlink(self.temp_path)
            _fsync_directory(self.directory)
            return path
        raise BackupError(f'no free backup name in {self.directory}')

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp_path)


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BackupReader:
    """A backup file opened once, checked whole before it is used."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._file: IO[bytes] = open(path, 'rb')  # noqa: SIM115
        except OSError as exc:
            raise BackupError(
                f'cannot open backup {path}: {exc.strerror}') from None
        self.header = self._parse(self._file.readline(), 1)
        if (self.header.get('format') != FORMAT or
                self.header.get('version') != VERSION):
            self.close()
            raise BackupError(f'{path} is not a flavor sync backup')
        self.timestamp = str(self.header.get('timestamp', ''))
        self.records = 0

    def _parse(self, line: bytes, number: int) -> dict[str, Any]:
        try:
            document = loads(line)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise BackupError(f'{self.path}: line {number} is not a JSON '
                              f'object; the file is damaged')
        return document

    def _record(self, line: bytes, number: int) -> BackupRecord:
        document = self._parse(line, number)
        try:
            spec = document['spec']
            start, end, text = document['patch']
            valid = (type(spec) is str and type(text) is str and
                     type(start) is int and type(end) is int and
                     0 <= start <= end <= len(spec))
            record = BackupRecord(
                id=int(document['id']),
                instance_uuid=str(document['instance_uuid']),
                spec=spec, patch=Patch(start, end, text))
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise BackupError(f'{self.path}: line {number} is not a backup '
                              f'record')
        return record

    def verify(self, written_sha256: str | None = None) -> None:
        """Check every record, and the trailer's count and checksum.

        ``written_sha256`` is the checksum this process computed while it
        wrote the file: when the content still has it, the records are the
        ones it wrote and need no checking one by one.
        """
        self._file.seek(0)
        digest = hashlib.sha256()
        previous = None
        lines = 0
        # A damaged file is told as such before any of its records is.
        bad_record = None
        for line in self._file:
            if previous is not None:
                digest.update(previous)
                if lines > 1 and not written_sha256 and bad_record is None:
                    try:
                        self._record(previous, lines)
                    except BackupError as exc:
                        bad_record = exc
            previous = line
            lines += 1
        trailer = self._parse(previous or b'', lines)
        records = lines - 2
        expected = written_sha256 or trailer.get('sha256')
        if (expected != digest.hexdigest() or
                trailer.get('sha256') != expected):
            raise BackupError(f'{self.path}: checksum mismatch; the backup '
                              f'was altered or truncated, refusing to use it')
        if trailer.get('records') != records:
            raise BackupError(f'{self.path}: holds {records} records, its '
                              f'trailer says {trailer.get("records")}')
        if bad_record is not None:
            raise bad_record
        self.records = records

    def __iter__(self) -> Iterator[BackupRecord]:
        """The records, in file order (call verify() first)."""
        self._file.seek(0)
        self._file.readline()
        for number in range(2, self.records + 2):
            yield self._record(self._file.readline(), number)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> 'BackupReader':
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _last_line(path: str) -> bytes:
    with open(path, 'rb') as backup:
        backup.seek(0, os.SEEK_END)
        size = backup.tell()
        backup.seek(max(0, size - 4096))
        tail = backup.read().rstrip(b'\n')
    return tail.rsplit(b'\n', 1)[-1]


def list_backups(directory: str) -> list[BackupSummary]:
    """Published backups, newest first, from their header and trailer.

    Listing does not verify checksums (that reads every byte); restore
    does. A file whose header or trailer cannot be read is listed with
    ``records=-1``.
    """
    if not os.path.isdir(directory):
        return []
    summaries = []
    for name in os.listdir(directory):
        if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
            continue
        path = os.path.join(directory, name)
        timestamp, records = '?', -1
        try:
            with open(path, 'rb') as backup:
                header = json.loads(backup.readline())
            trailer = json.loads(_last_line(path))
            timestamp = str(header['timestamp'])
            records = int(trailer['records'])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        summaries.append(BackupSummary(path, timestamp, records))
    summaries.sort(key=lambda summary: os.path.basename(summary.path),
                   reverse=True)
    return summaries
