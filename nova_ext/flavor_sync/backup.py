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

The key migration (``--migrate-keys``) keeps its own kind of backup, with
the same header, trailer and checksum but format
``xloud-flavor-sync-key-migration-backup`` (an older tool refuses it rather
than misreading it), named ``minimum_keys_*.jsonl``, and records of three
kinds, told by their ``table``::

    {"table": "flavor_extra_specs", "flavor_id": 3, "flavorid": "...",
     "name": "...", "rows": [[ID, KEY, VALUE, CREATED_AT, UPDATED_AT], ...],
     "renames": [[ID, "<new key>" or null], ...]}
    {"table": "request_specs", "id": ..., "instance_uuid": ..., "spec": ...,
     "patch": [...]}
    {"table": "instance_extra", "cell": "<cell uuid>", "id": ...,
     "instance_uuid": ..., "flavor": "<original>", "patch": [...]}

A flavor record holds the flavor's rows for the legacy and the namespaced
keys as they were (timestamps as the database stores them, so a restore
puts them back exactly) and what the migration did to each: renamed it, or
deleted it (null) because the namespaced key already held the same value.
An instance record holds ``instance_extra.flavor`` of an instance in the
named cell; cell database URLs are never written to a backup.

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
from typing import IO, Any, NamedTuple

from nova_ext.flavor_sync.spec import Patch, loads, orjson

FORMAT = 'xloud-flavor-sync-backup'
KEY_MIGRATION_FORMAT = 'xloud-flavor-sync-key-migration-backup'
VERSION = 1
PREFIX = 'request_specs_'
KEY_MIGRATION_PREFIX = 'minimum_keys_'
# Each kind of backup and the prefix of its file names.
PREFIXES = {FORMAT: PREFIX, KEY_MIGRATION_FORMAT: KEY_MIGRATION_PREFIX}
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


class ExtraSpecRow(NamedTuple):
    """A ``flavor_extra_specs`` row; timestamps as the database stores them."""

    id: int
    key: str
    value: str
    created_at: str | None
    updated_at: str | None


@dataclasses.dataclass(frozen=True)
class FlavorKeysRecord:
    """A flavor's legacy and namespaced key rows, and what became of them."""

    flavor_id: int
    flavorid: str
    name: str | None
    rows: tuple[ExtraSpecRow, ...]
    # Row id -> its new key; None when the row was deleted.
    renames: tuple[tuple[int, str | None], ...]

    @property
    def original(self) -> frozenset[tuple[int, str, str]]:
        """(id, key, value) of the rows before the migration."""
        return frozenset((row.id, row.key, row.value) for row in self.rows)

    @property
    def migrated(self) -> frozenset[tuple[int, str, str]]:
        """(id, key, value) of the rows the migration leaves."""
        renames = dict(self.renames)
        result = set()
        for row in self.rows:
            key = renames.get(row.id, row.key)
            if key is not None:
                result.add((row.id, key, row.value))
        return frozenset(result)


@dataclasses.dataclass(frozen=True)
class InstanceFlavorRecord:
    """An instance's ``instance_extra.flavor`` and what replaces it."""

    cell_uuid: str
    id: int
    instance_uuid: str
    flavor: str
    patch: Patch

    @property
    def synced(self) -> str:
        """The text the migration writes."""
        return self.patch.applied_to(self.flavor)


KeyMigrationRecord = FlavorKeysRecord | BackupRecord | InstanceFlavorRecord


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


def _document(record: BackupRecord | KeyMigrationRecord,
              kind: str) -> dict[str, Any]:
    """A record as its backup line holds it."""
    if isinstance(record, FlavorKeysRecord):
        return {'table': 'flavor_extra_specs',
                'flavor_id': record.flavor_id, 'flavorid': record.flavorid,
                'name': record.name,
                'rows': [list(row) for row in record.rows],
                'renames': [list(rename) for rename in record.renames]}
    if isinstance(record, InstanceFlavorRecord):
        return {'table': 'instance_extra', 'cell': record.cell_uuid,
                'id': record.id, 'instance_uuid': record.instance_uuid,
                'flavor': record.flavor, 'patch': list(record.patch)}
    document = {'id': record.id, 'instance_uuid': record.instance_uuid,
                'spec': record.spec, 'patch': list(record.patch)}
    if kind == KEY_MIGRATION_FORMAT:
        return {'table': 'request_specs', **document}
    return document


class BackupWriter:
    """Streams records into a new backup, published only when complete."""

    def __init__(self, directory: str, source: str,
                 kind: str = FORMAT) -> None:
        try:
            ensure_private_directory(directory)
            fd, self.temp_path = tempfile.mkstemp(
                prefix='.' + PREFIX, suffix='.tmp', dir=directory)
        except OSError as exc:
            raise BackupError(f'cannot create a backup in {directory}: '
                              f'{exc.strerror}') from None
        self.directory = directory
        self.kind = kind
        self.timestamp = datetime.datetime.now().strftime(TIMESTAMP_FORMAT)
        self.records = 0
        self._digest = hashlib.sha256()
        os.fchmod(fd, 0o600)
        self._file: IO[bytes] = os.fdopen(fd, 'wb')
        self._write(_line({'format': kind, 'version': VERSION,
                           'timestamp': self.timestamp, 'source': source}))

    def _write(self, data: bytes) -> None:
        self._digest.update(data)
        self._file.write(data)

    def add(self, record: BackupRecord | KeyMigrationRecord) -> None:
        self._write(_line(_document(record, self.kind)))
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
                f'{PREFIXES[self.kind]}{self.timestamp}{suffix}{SUFFIX}')
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
        if (self.header.get('format') not in PREFIXES or
                self.header.get('version') != VERSION):
            self.close()
            raise BackupError(f'{path} is not a flavor sync backup')
        # Which kind of backup: FORMAT or KEY_MIGRATION_FORMAT.
        self.kind = self.header['format']
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

    def _record(self, line: bytes,
                number: int) -> BackupRecord | KeyMigrationRecord:
        document = self._parse(line, number)
        try:
            if self.kind == FORMAT:
                record = _spec_record(document)
            else:
                record = _KEY_MIGRATION_RECORDS[document['table']](document)
        except (KeyError, TypeError, ValueError):
            record = None
        if record is None:
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

    def __iter__(self) -> Iterator[BackupRecord | KeyMigrationRecord]:
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


def _patch(document: dict[str, Any], original: Any) -> Patch | None:
    """The record's patch, when it fits the text it patches."""
    start, end, text = document['patch']
    if (type(original) is str and type(text) is str and
            type(start) is int and type(end) is int and
            0 <= start <= end <= len(original)):
        return Patch(start, end, text)
    return None


def _spec_record(document: dict[str, Any]) -> BackupRecord | None:
    patch = _patch(document, document['spec'])
    if patch is None:
        return None
    return BackupRecord(id=int(document['id']),
                        instance_uuid=str(document['instance_uuid']),
                        spec=document['spec'], patch=patch)


def _instance_flavor_record(
        document: dict[str, Any]) -> InstanceFlavorRecord | None:
    patch = _patch(document, document['flavor'])
    if patch is None or type(document['cell']) is not str:
        return None
    return InstanceFlavorRecord(
        cell_uuid=document['cell'], id=int(document['id']),
        instance_uuid=str(document['instance_uuid']),
        flavor=document['flavor'], patch=patch)


def _optional_str(value: Any) -> bool:
    return value is None or type(value) is str


def _flavor_keys_record(document: dict[str, Any]) -> FlavorKeysRecord | None:
    rows = tuple(ExtraSpecRow(*row) for row in document['rows'])
    renames = tuple((row_id, key) for row_id, key in document['renames'])
    row_ids = [row.id for row in rows]
    valid = (
        type(document['flavor_id']) is int and
        type(document['flavorid']) is str and
        _optional_str(document['name']) and
        all(type(row.id) is int and type(row.key) is str and
            type(row.value) is str and _optional_str(row.created_at) and
            _optional_str(row.updated_at) for row in rows) and
        len(set(row_ids)) == len(row_ids) and
        all(row_id in row_ids and _optional_str(key)
            for row_id, key in renames) and
        len({row_id for row_id, _ in renames}) == len(renames))
    if not valid:
        return None
    return FlavorKeysRecord(
        flavor_id=document['flavor_id'], flavorid=document['flavorid'],
        name=document['name'], rows=rows, renames=renames)


_KEY_MIGRATION_RECORDS = {
    'flavor_extra_specs': _flavor_keys_record,
    'request_specs': _spec_record,
    'instance_extra': _instance_flavor_record,
}


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
        if not (name.startswith(tuple(PREFIXES.values())) and
                name.endswith(SUFFIX)):
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
    # Both kinds of backup in one list, so by timestamp first.
    summaries.sort(key=lambda summary: (summary.timestamp,
                                        os.path.basename(summary.path)),
                   reverse=True)
    return summaries
