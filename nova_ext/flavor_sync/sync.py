"""Bring RequestSpecs in line with their flavors, and undo it from a backup.

A sync is two passes. The scan streams every RequestSpec, compares its
embedded flavor with the flavor's definition in the ``flavors`` and
``flavor_extra_specs`` tables (the authoritative source: the API's flavor
extra specs calls write there) and, when writing, streams each stale row's
original and its synchronised replacement into a backup. Only once that
backup is sealed on disk does the write pass start: it reads the backup
back in batches and writes each batch in one transaction, after checking
that every row is still exactly what the scan saw. A run killed at any
point therefore leaves each row either old or new, and the backup of every
row it may have changed already on disk; running again converges on the
same result.

Rows matched by flavorid: a flavor deleted and re-created under the same
flavorid (the only way to change its size) is the same flavor for
instances booted from it. A RequestSpec whose instance has no instance
mapping belongs to an instance Nova has archived away and is skipped.
"""

import dataclasses
import itertools
import logging
import os
import signal
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import sqlalchemy as sa

from nova_ext.flavor_sync import backup, database
from nova_ext.flavor_sync.spec import (
    EmbeddedFlavorCheck,
    Flavor,
    FlavorDiff,
    MalformedSpec,
    RequestSpecDocument,
    SpecRewriter,
)

LOG = logging.getLogger('nova_ext.flavor_sync')

PROGRESS_EVERY = 100

# Test hook, documented in doc/flavor-sync.md: stop the process (SIGSTOP)
# right after the Nth write batch has committed, so a test can kill -9 it
# at a known point.
STOP_AFTER_BATCH_ENV = 'XLOUD_FLAVOR_SYNC_TEST_STOP_AFTER_BATCH'


@dataclasses.dataclass
class Summary:
    changed: int = 0
    skipped: int = 0
    errors: int = 0

    def counts(self, changed_label: str) -> str:
        return (f'{changed_label}={self.changed}, '
                f'Skipped={self.skipped}, Errors={self.errors}')

    def line(self, changed_label: str) -> str:
        return f'Summary: {self.counts(changed_label)}'

    def add(self, other: 'Summary') -> None:
        self.changed += other.changed
        self.skipped += other.skipped
        self.errors += other.errors


@dataclasses.dataclass(frozen=True)
class SyncOptions:
    apply: bool = False
    keep_backup: bool = True
    verbose: bool = False
    flavors: Sequence[str] = ()
    instances: Sequence[str] = ()
    batch_size: int = 500
    backup_dir: str = '.'


def batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def stop_for_test(batch_number: int) -> None:
    stop_after = os.environ.get(STOP_AFTER_BATCH_ENV)
    if stop_after and int(stop_after) == batch_number:
        LOG.info('Stopping after batch %d (%s)', batch_number,
                 STOP_AFTER_BATCH_ENV)
        for handler in LOG.handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGSTOP)


def _matches_flavor(flavorid: str, name: object,
                    wanted: Sequence[str]) -> bool:
    return not wanted or flavorid in wanted or name in wanted


def synchronise(engine: sa.engine.Engine, options: SyncOptions) -> Summary:
    """Check every RequestSpec; rewrite the stale ones if asked to."""
    summary = Summary()
    with engine.connect() as connection:
        flavors = database.load_flavors(connection)
        total = database.count_specs(connection, options.instances)
    LOG.info('Loaded %d flavors', len(flavors))
    LOG.info('Found %d request specs', total)

    writer = None
    if options.apply:
        writer = backup.BackupWriter(options.backup_dir,
                                     database.describe(engine))
    try:
        scan = _Scan(options, flavors, total, summary, writer)
        scan.run(engine)
        if scan.filtered:
            LOG.info('Not matching --flavor: %d request specs',
                     scan.filtered)
        if writer is None:
            return summary
        if not writer.records:
            writer.discard()
            return summary
        plan = writer.close()
        if options.keep_backup:
            plan = writer.publish()
            LOG.info('Backup written: %s (%d records)', plan, writer.records)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    try:
        _write(engine, options, plan, writer.sha256, summary)
    finally:
        if not options.keep_backup:
            os.unlink(plan)
    return summary


class _Stale(NamedTuple):
    row: sa.Row
    flavor: Flavor
    # How the embedded copy differs; computed only to be described.
    diff: FlavorDiff | None
    # The embedded flavor's text, when the quick check took it out.
    embedded: str | None


# Stale rows waiting for their instance mapping check, checked together.
_MAPPING_CHECK_EVERY = 500


class _Scan:
    """The first pass: find stale RequestSpecs, back them up if writing."""

    def __init__(self, options: SyncOptions, flavors: dict[str, Flavor],
                 total: int, summary: Summary,
                 writer: backup.BackupWriter | None) -> None:
        self.options = options
        self.flavors = flavors
        self.total = total
        self.summary = summary
        self.writer = writer
        self.checked = 0
        self.filtered = 0
        self._quick = EmbeddedFlavorCheck(flavors)
        self._rewriter = SpecRewriter()

    def run(self, engine: sa.engine.Engine) -> None:
        pending: list[_Stale] = []
        with engine.connect() as connection:
            for page in database.iter_spec_pages(connection,
                                                 self.options.instances):
                pending.extend(filter(None, map(self._check, page)))
                if len(pending) >= _MAPPING_CHECK_EVERY:
                    self._record_stale(connection, pending)
                    pending = []
            self._record_stale(connection, pending)

    def _check(self, row: sa.Row) -> _Stale | None:
        """Whether ``row`` is stale, and how."""
        spec_id, instance_uuid, text = row
        self.checked += 1
        if self.options.verbose and self.checked % PROGRESS_EVERY == 0:
            LOG.info('Progress: %d/%d request specs checked', self.checked,
                     self.total)
        # Most specs are in sync: settle those from their flavor part, and
        # parse in full only the rest, which may need a diff, a rewrite or
        # an explanation of what is wrong with them.
        found = self._quick.embedded(text)
        if found is not None:
            if not _matches_flavor(found.flavorid, found.name,
                                   self.options.flavors):
                self.filtered += 1
                return None
            if found.in_sync:
                self.summary.skipped += 1
                return None
            if found.in_sync is False and not self.options.verbose:
                # The differences are needed only to describe them.
                return _Stale(row, found.flavor, None, found.text)
        try:
            document = RequestSpecDocument(text)
        except MalformedSpec as exc:
            self.summary.errors += 1
            LOG.error('RequestSpec %s (id %d): %s; left untouched',
                      instance_uuid, spec_id, exc)
            return None
        if not _matches_flavor(document.flavorid, document.flavor_name,
                               self.options.flavors):
            self.filtered += 1
            return None
        flavor = self.flavors.get(document.flavorid)
        if flavor is None:
            self.summary.errors += 1
            LOG.error('RequestSpec %s (id %d): flavor %s (%s) no longer '
                      'exists; left untouched', instance_uuid, spec_id,
                      document.flavorid, document.flavor_name)
            return None
        diff = document.diff(flavor)
        if not diff:
            self.summary.skipped += 1
            return None
        return _Stale(row, flavor, diff, found and found.text)

    def _record_stale(self, connection: sa.engine.Connection,
                      stale: list[_Stale]) -> None:
        if not stale:
            return
        # Only stale rows need the mapping check: it decides the write.
        mapped = database.mapped_instances(
            connection, [item.row[1] for item in stale])
        connection.rollback()
        for (spec_id, instance_uuid, text), flavor, diff, embedded in stale:
            if instance_uuid not in mapped:
                self.summary.skipped += 1
                if self.options.verbose:
                    LOG.info('Skipping %s: no instance mapping (instance '
                             'deleted and archived)', instance_uuid)
                continue
            self.summary.changed += 1
            if self.options.verbose:
                LOG.info('Mismatch: %s (Flavor: %s)', instance_uuid,
                         flavor.flavorid)
                for line in diff.describe():
                    LOG.info('  %s', line)
            if self.writer is not None:
                self.writer.add(backup.BackupRecord(
                    id=spec_id, instance_uuid=instance_uuid, spec=text,
                    patch=self._rewriter.patch(text, flavor, embedded)))


def _write(engine: sa.engine.Engine, options: SyncOptions, plan: str,
           plan_sha256: str, summary: Summary) -> None:
    """Rewrite the rows recorded in ``plan``, one transaction per batch.

    ``plan_sha256`` is the checksum computed while the plan was written:
    the rows are rewritten only from the very bytes the scan sealed.
    """
    planned, written = summary.changed, 0
    summary.changed = 0
    with backup.BackupReader(plan) as reader:
        reader.verify(written_sha256=plan_sha256)
        for number, batch in enumerate(
                batches(reader, options.batch_size), start=1):
            try:
                with database.write_transaction(engine) as connection:
                    written_in_batch = write_spec_batch(connection, batch,
                                                        summary)
            except sa.exc.DBAPIError as exc:
                summary.errors += len(batch)
                LOG.error('Batch %d (%d request specs) rolled back: %s',
                          number, len(batch), exc.orig or exc)
                continue
            written += len(batch)
            summary.changed += written_in_batch
            if options.verbose:
                LOG.info('Progress: %d/%d request specs written', written,
                         planned)
            stop_for_test(number)


def write_spec_batch(connection: sa.engine.Connection,
                     batch: list[backup.BackupRecord], summary: Summary,
                     activity: str = 'sync') -> int:
    """Rewrite the rows still as the scan saw them; returns how many."""
    current = database.current_specs(
        connection, [record.id for record in batch])
    updates = []
    for record in batch:
        row = current.get(record.id)
        if (row is None or row.instance_uuid != record.instance_uuid or
                row.spec != record.spec):
            # Nova moved, resized or deleted the instance since the scan;
            # what it wrote is newer than anything we could write.
            summary.skipped += 1
            LOG.warning('RequestSpec %s changed during the %s; left as '
                        'Nova wrote it', record.instance_uuid, activity)
            continue
        updates.append((record.id, record.synced))
    database.write_specs(connection, updates)
    return len(updates)


def restore(engine: sa.engine.Engine, path: str, apply: bool,
            verbose: bool, batch_size: int = 500) -> Summary:
    """Put back the specs recorded in a backup.

    The whole file is checked against its checksum before any row is
    touched. A record is restored only where the row still holds what the
    sync wrote: rows of instances that are gone, rows already as in the
    backup, and rows Nova rewrote since the sync (a resize or a move
    records a new flavor; putting the old one back would undo it) are
    skipped.
    """
    summary = Summary()
    with backup.BackupReader(path) as reader:
        if reader.kind != backup.FORMAT:
            raise backup.BackupError(
                f'{path} is a key migration backup; restore it with '
                f'key_migration.restore')
        reader.verify()
        LOG.info('Backup timestamp: %s', reader.timestamp)
        LOG.info('Records in backup: %d', reader.records)
        for number, batch in enumerate(batches(reader, batch_size),
                                       start=1):
            try:
                if apply:
                    with database.write_transaction(engine) as connection:
                        restore_spec_batch(connection, batch, apply,
                                           verbose, summary)
                else:
                    with engine.connect() as connection:
                        restore_spec_batch(connection, batch, apply,
                                           verbose, summary)
            except sa.exc.DBAPIError as exc:
                summary.errors += len(batch)
                LOG.error('Batch %d (%d records) rolled back: %s', number,
                          len(batch), exc.orig or exc)
            if verbose:
                done = min(number * batch_size, reader.records)
                LOG.info('Progress: %d/%d records processed', done,
                         reader.records)
    return summary


def restore_spec_batch(connection: sa.engine.Connection,
                       batch: list[backup.BackupRecord], apply: bool,
                       verbose: bool, summary: Summary,
                       activity: str = 'sync') -> None:
    """Put back the records whose rows are still as ``activity`` left
    them; written only with ``apply``."""
    current = database.current_specs(
        connection, [record.id for record in batch], lock=apply)
    mapped = database.mapped_instances(
        connection, [record.instance_uuid for record in batch])
    updates = []
    for record in batch:
        row = current.get(record.id)
        if (row is None or row.instance_uuid != record.instance_uuid or
                record.instance_uuid not in mapped):
            summary.skipped += 1
            if verbose:
                LOG.info('Skipping %s: instance no longer exists',
                         record.instance_uuid)
        elif row.spec == record.spec:
            summary.skipped += 1
            if verbose:
                LOG.info('Skipping %s: already as in the backup',
                         record.instance_uuid)
        elif row.spec != record.synced:
            summary.skipped += 1
            LOG.warning('Skipping %s: its RequestSpec changed after the '
                        '%s; restoring would undo that change',
                        record.instance_uuid, activity)
        else:
            summary.changed += 1
            if verbose:
                LOG.info('Restore: %s', record.instance_uuid)
            updates.append((record.id, record.spec))
    if apply:
        database.write_specs(connection, updates)
