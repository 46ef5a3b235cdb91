"""Rename the legacy minimum extra specs to their ``xloud:`` names.

This project's flavors used to carry ``minimum_cpu`` and ``minimum_memory``
without a scope. Nova's ``AggregateInstanceExtraSpecsFilter`` takes every
extra spec without a scope as aggregate metadata a host must match, so on a
cloud that enables the filter such flavors end in NoValidHost. The keys are
now ``xloud:minimum_cpu`` and ``xloud:minimum_memory`` (the legacy names
stay readable as a deprecated alias); ``--migrate-keys`` renames them
everywhere Nova keeps a copy of a flavor:

- ``nova_api.flavor_extra_specs``, the flavors themselves. Rows are renamed
  in place, keeping their ids, so Nova lists the specs in the same order.
- ``nova_api.request_specs.spec``, the flavor embedded in each RequestSpec,
  which the scheduler reads for every move.
- ``instance_extra.flavor`` in every cell database, cell0 included: the
  instance's flavor (``cur``) and, while a resize waits to be confirmed,
  ``old`` and ``new``. The compute API shows this copy's extra specs (cell0
  holds the instances whose build failed, and they are shown too), and
  resize, revert and the compute host read it.

When a copy holds a key under both names with the same value, the
namespaced one stays and the legacy one goes. When the values differ the
flavor (or the copy) is refused: an ERROR, and nothing changed for it,
because which value is right is the operator's call.

A run has the sync's two passes and keeps its guarantees. The scan reads
every database (every cell must answer) and streams the original of each
row it will change, with its replacement, into one backup, sealed and on
disk before the first write. The write pass works from that file in
batches, one transaction each, and rewrites a row only when it is still
what the scan saw. Killed at any point, every row is old or new and the
backup holds all the rows the run may have changed; another run finishes
the job. Embedded copies are written the way Nova writes them
(``jsonutils.dumps``), changed only in the renamed keys.
"""

import dataclasses
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa

from nova_ext.flavor_sync import backup, database, sync
from nova_ext.flavor_sync.spec import (
    MalformedSpec,
    Patch,
    RequestSpecDocument,
    dumps,
    embedded_flavor_span,
    embedded_flavor_text,
    loads,
)

LOG = sync.LOG

# Legacy key -> the key that replaces it. nova_ext.sizing reads both; the
# lead may later move this table there.
LEGACY_KEYS = {
    'minimum_cpu': 'xloud:minimum_cpu',
    'minimum_memory': 'xloud:minimum_memory',
}
# Both names of every key: what a flavor's rows are compared on.
ALL_KEYS = (*LEGACY_KEYS, *LEGACY_KEYS.values())

# Where the records of a migration belong; instances are by cell uuid.
FLAVORS = 'flavors'
REQUEST_SPECS = 'request specs'
INSTANCES = 'instances'

# Distinct embedded flavor texts whose rewrite is remembered: instances
# booted from one version of a flavor embed the same text.
_KNOWN_TEXTS = 256
# Candidate RequestSpecs waiting for their instance mapping check.
_MAPPING_CHECK_EVERY = 500

# A JSON string that decodes to a legacy key is written either as the key
# itself between quotes or with a \u escape (no other escape decodes to a
# letter, a digit or "_"), so a text with neither holds no legacy key.
_QUOTED_LEGACY_KEYS = tuple(json.dumps(key) for key in LEGACY_KEYS)


def may_hold_legacy_keys(text: str) -> bool:
    """False only when ``text`` certainly holds no legacy key."""
    return '\\u' in text or any(key in text for key in _QUOTED_LEGACY_KEYS)


class ConflictingValues(ValueError):
    """A key is present under both names, with different values."""

    def __init__(self, conflicts: Mapping[str, tuple[Any, Any]],
                 where: str | None = None) -> None:
        self.conflicts = dict(conflicts)
        # Which of an instance's flavors: 'cur', 'old' or 'new'.
        self.where = where
        super().__init__(', '.join(
            f'{legacy}={old!r} but {LEGACY_KEYS[legacy]}={new!r}'
            for legacy, (old, new) in self.conflicts.items()))


class MalformedInstanceFlavor(ValueError):
    """``instance_extra.flavor`` is not the document Nova writes there."""


def migrated_extra_specs(extra_specs: Mapping[str, Any]) -> dict | None:
    """``extra_specs`` with the legacy keys renamed; None if it has none.

    A renamed key keeps its place among the others. A legacy key whose
    namespaced key is there with the same value is dropped; with another
    value, ConflictingValues is raised.
    """
    if not any(key in extra_specs for key in LEGACY_KEYS):
        return None
    conflicts = {
        legacy: (extra_specs[legacy], extra_specs[new])
        for legacy, new in LEGACY_KEYS.items()
        if legacy in extra_specs and new in extra_specs and
        extra_specs[legacy] != extra_specs[new]}
    if conflicts:
        raise ConflictingValues(conflicts)
    migrated = {}
    for key, value in extra_specs.items():
        if key in LEGACY_KEYS:
            if LEGACY_KEYS[key] in extra_specs:
                continue
            key = LEGACY_KEYS[key]
        migrated[key] = value
    return migrated


def describe_renames(extra_specs: Mapping[str, Any]) -> str:
    """What migrated_extra_specs does to ``extra_specs``, in words."""
    changes = []
    for legacy, new in LEGACY_KEYS.items():
        if legacy not in extra_specs:
            continue
        if new in extra_specs:
            changes.append(f'{legacy} dropped ({new} has the same value)')
        else:
            changes.append(f'{legacy} -> {new}')
    return ', '.join(changes)


class _Rewrite(NamedTuple):
    patch: Patch
    description: str


# The quick path cannot settle this text: parse the whole document.
_DEFER = object()


def _flavor_data(envelope: Any) -> dict | None:
    """The data of a Flavor envelope whose extra specs can be renamed."""
    if (not isinstance(envelope, dict) or
            envelope.get('nova_object.name') != 'Flavor'):
        return None
    data = envelope.get('nova_object.data')
    if (not isinstance(data, dict) or
            not isinstance(data.get('extra_specs', {}), dict)):
        return None
    return data


class SpecKeys:
    """Renames the legacy keys of the flavors embedded in RequestSpecs.

    The embedded flavor's text is taken out without parsing the rest of
    the spec and its rewrite is worked out once per distinct text, as
    ``SpecRewriter`` does; a spec that is not written the way Nova writes
    specs is parsed in full. The patch covers only the span that changes
    (from the first renamed key to the last): a migration may rewrite
    every spec, and the backup keeps a patch per spec.
    """

    def __init__(self) -> None:
        # Embedded flavor text -> (patch of that text, description).
        self._known: dict[str, tuple[Patch, str] | None] = {}

    def rewrite(self, text: str) -> _Rewrite | None:
        """What renames the keys in ``text``; None when it has none.

        Raises MalformedSpec or ConflictingValues.
        """
        embedded = embedded_flavor_text(text)
        span = (None if embedded is None
                else embedded_flavor_span(text, embedded))
        if span is not None:
            found = self._known.get(embedded, _DEFER)
            if found is _DEFER:
                found = self._rename_flavor(embedded)
            if found is not _DEFER:
                if found is None:
                    return None
                inner, description = found
                start = span[0]
                return _Rewrite(Patch(start + inner.start, start + inner.end,
                                      inner.text), description)
        document = RequestSpecDocument(text)
        extra_specs = document.flavor.get('extra_specs', {})
        migrated = migrated_extra_specs(extra_specs)
        if migrated is None:
            return None
        rewritten = document.with_extra_specs(migrated).applied_to(text)
        return _Rewrite(Patch.between(text, rewritten),
                        describe_renames(extra_specs))

    def _rename_flavor(self, embedded: str) -> Any:
        envelope = loads(embedded)
        data = _flavor_data(envelope)
        if data is None or type(data.get('flavorid')) is not str:
            return _DEFER
        extra_specs = data.get('extra_specs', {})
        migrated = migrated_extra_specs(extra_specs)
        found = None
        if migrated is not None:
            description = describe_renames(extra_specs)
            data['extra_specs'] = migrated
            found = (Patch.between(embedded, dumps(envelope)), description)
        if len(self._known) < _KNOWN_TEXTS:
            self._known[embedded] = found
        return found


class InstanceFlavorKeys:
    """Renames the legacy keys in ``instance_extra.flavor`` texts.

    Nova writes that column as ``jsonutils.dumps({"cur": ..., "old": ...,
    "new": ...})`` of Flavor primitives (``Instance._save_flavor``); the
    document is parsed and written back the same way, so nothing but the
    renamed keys changes. The text holds nothing specific to the instance,
    so instances of one flavor version share it and its rewrite is worked
    out once.
    """

    def __init__(self) -> None:
        self._known: dict[str, _Rewrite | None] = {}

    def rewrite(self, text: str) -> _Rewrite | None:
        """What renames the keys in ``text``; None when it has none.

        Raises MalformedInstanceFlavor or ConflictingValues (its ``where``
        says which of the flavors).
        """
        try:
            return self._known[text]
        except KeyError:
            pass
        found = self._rewrite(text)
        if len(self._known) < _KNOWN_TEXTS:
            self._known[text] = found
        return found

    @staticmethod
    def _rewrite(text: str) -> _Rewrite | None:
        try:
            document = loads(text)
        except ValueError as exc:
            raise MalformedInstanceFlavor(
                f'flavor is not valid JSON: {exc}') from None
        if not isinstance(document, dict) or 'cur' not in document:
            raise MalformedInstanceFlavor(
                'flavor is not a {"cur", "old", "new"} document')
        changes = []
        for slot in ('cur', 'old', 'new'):
            envelope = document.get(slot)
            if envelope is None:
                continue
            data = _flavor_data(envelope)
            if data is None:
                raise MalformedInstanceFlavor(
                    f'flavor {slot!r} is not a Flavor object with extra '
                    f'specs')
            extra_specs = data.get('extra_specs', {})
            try:
                migrated = migrated_extra_specs(extra_specs)
            except ConflictingValues as exc:
                raise ConflictingValues(exc.conflicts, where=slot) from None
            if migrated is not None:
                changes.append(f'{slot}: {describe_renames(extra_specs)}')
                data['extra_specs'] = migrated
        if not changes:
            return None
        return _Rewrite(Patch.between(text, dumps(document)),
                        '; '.join(changes))


@dataclasses.dataclass(frozen=True)
class MigrationOptions:
    apply: bool = False
    keep_backup: bool = True
    verbose: bool = False
    batch_size: int = 500
    backup_dir: str = '.'
    # Where a templated cell database URL gets its [database] values.
    config_file: str = database.DEFAULT_CONFIG_FILE


class _Cell(NamedTuple):
    uuid: str
    label: str
    engine: sa.engine.Engine


def _cell_label(mapping: database.CellMapping) -> str:
    return f'{mapping.name} ({mapping.uuid})' if mapping.name else mapping.uuid


def _cell_url(mapping: database.CellMapping, config_file: str) -> str:
    """The cell's database URL, its template filled in as Nova does."""
    url = mapping.database_connection
    if '{' not in url:
        return url
    try:
        default = database.connection_from_config(config_file, 'database')
    except database.ConfigError as exc:
        raise database.ConfigError(
            f'cell {_cell_label(mapping)}: its database_connection is a '
            f'template, filled in from [database] connection: {exc}'
        ) from None
    # Nova's own filling-in (what CellMapping.format_db_url applies in
    # every service), imported only for the clouds that need it.
    from nova.objects.cell_mapping import CellMapping
    try:
        return CellMapping._format_url(url, default)
    except (KeyError, IndexError, ValueError) as exc:
        raise database.ConfigError(
            f'cell {_cell_label(mapping)}: cannot fill in its '
            f'database_connection template: {exc!r}') from None


def _open_cells(mappings: Iterable[database.CellMapping],
                config_file: str) -> list[_Cell]:
    """An engine per cell database; cells that share one are read once."""
    cells: list[_Cell] = []
    by_url: dict[str, _Cell] = {}
    try:
        for mapping in mappings:
            url = _cell_url(mapping, config_file)
            if url in by_url:
                LOG.info('Cell %s has the database of cell %s',
                         _cell_label(mapping), by_url[url].label)
                continue
            try:
                engine = database.create_engine(url)
            except database.ConfigError as exc:
                raise database.ConfigError(
                    f'cell {_cell_label(mapping)}: {exc}') from None
            by_url[url] = _Cell(mapping.uuid, _cell_label(mapping), engine)
            cells.append(by_url[url])
    except BaseException:
        _close_cells(cells)
        raise
    return cells


def _close_cells(cells: Iterable[_Cell]) -> None:
    for cell in cells:
        cell.engine.dispose()


class _Tally:
    """A summary per place, in the order the places are gone through."""

    def __init__(self, cells: Iterable[_Cell] = ()) -> None:
        self._summaries: dict[str, sync.Summary] = {}
        self._labels = {FLAVORS: 'Flavors', REQUEST_SPECS: 'Request specs'}
        for cell in cells:
            self._labels[cell.uuid] = f'Instances in cell {cell.label}'

    def __getitem__(self, place: str) -> sync.Summary:
        return self._summaries.setdefault(place, sync.Summary())

    def reset_changed(self) -> None:
        """Count again, as the rows are written, what the scan planned."""
        for summary in self._summaries.values():
            summary.changed = 0

    def label(self, place: str) -> str:
        return self._labels.get(place, f'Instances in cell {place}')

    def total(self) -> sync.Summary:
        total = sync.Summary()
        for summary in self._summaries.values():
            total.add(summary)
        return total

    def log(self, changed_label: str) -> None:
        for place, summary in self._summaries.items():
            LOG.info('%s: %s', self.label(place),
                     summary.counts(changed_label))


def _place(record: backup.KeyMigrationRecord) -> str:
    if isinstance(record, backup.FlavorKeysRecord):
        return FLAVORS
    if isinstance(record, backup.InstanceFlavorRecord):
        return record.cell_uuid
    return REQUEST_SPECS


def _kind(place: str) -> str:
    """FLAVORS, REQUEST_SPECS or, for a cell, INSTANCES."""
    return place if place in (FLAVORS, REQUEST_SPECS) else INSTANCES


def _place_batches(records: Iterable[backup.KeyMigrationRecord],
                   size: int) -> Iterator[tuple[str, list]]:
    """Batches of ``size`` records, each from a single place."""
    for place, group in itertools.groupby(records, key=_place):
        for batch in sync.batches(group, size):
            yield place, batch


def _flavor_label(flavorid: str, name: str | None) -> str:
    return f'{name} (flavorid {flavorid})' if name else flavorid


def migrate(engine: sa.engine.Engine, options: MigrationOptions
            ) -> sync.Summary:
    """Find the legacy keys everywhere; rename them if asked to."""
    LOG.info('Renaming: %s', ', '.join(
        f'{legacy} -> {new}' for legacy, new in LEGACY_KEYS.items()))
    with engine.connect() as connection:
        flavor_count = database.count_flavors(connection)
        spec_count = database.count_specs(connection)
        mappings = database.load_cell_mappings(connection)
    LOG.info('Found %d flavors, %d request specs, %d cells', flavor_count,
             spec_count, len(mappings))
    cells = _open_cells(mappings, options.config_file)
    try:
        tally = _Tally(cells)
        _migrate(engine, cells, options, tally, flavor_count, spec_count)
    finally:
        _close_cells(cells)
    tally.log('Updated')
    return tally.total()


def _migrate(engine: sa.engine.Engine, cells: list[_Cell],
             options: MigrationOptions, tally: _Tally, flavor_count: int,
             spec_count: int) -> None:
    writer = None
    if options.apply:
        writer = backup.BackupWriter(options.backup_dir,
                                     database.describe(engine),
                                     kind=backup.KEY_MIGRATION_FORMAT)
    try:
        scan = _Scan(options, tally, writer)
        scan.flavors(engine, flavor_count)
        scan.request_specs(engine, spec_count)
        for cell in cells:
            scan.instances(cell)
        if writer is None:
            return
        if not writer.records:
            writer.discard()
            return
        plan = writer.close()
        if options.keep_backup:
            plan = writer.publish()
            LOG.info('Backup written: %s (%d records)', plan, writer.records)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    try:
        _write(engine, {cell.uuid: cell for cell in cells}, options, plan,
               writer.sha256, tally)
    finally:
        if not options.keep_backup:
            os.unlink(plan)


class _Scan:
    """The first pass: find the legacy keys, back the rows up if writing."""

    def __init__(self, options: MigrationOptions, tally: _Tally,
                 writer: backup.BackupWriter | None) -> None:
        self.options = options
        self.tally = tally
        self.writer = writer
        self._specs = SpecKeys()
        self._instances = InstanceFlavorKeys()

    def _progress(self, checked: int, total: int, what: str) -> None:
        if self.options.verbose and checked % sync.PROGRESS_EVERY == 0:
            LOG.info('Progress: %d/%d %s checked', checked, total, what)

    def flavors(self, engine: sa.engine.Engine, total: int) -> None:
        summary = self.tally[FLAVORS]
        with engine.connect() as connection:
            rows = database.extra_spec_rows(connection, ALL_KEYS)
        by_flavor = {
            flavor_id: list(flavor_rows) for flavor_id, flavor_rows in
            itertools.groupby(rows, key=lambda row: row.flavor_id)}
        legacy = {flavor_id: flavor_rows
                  for flavor_id, flavor_rows in by_flavor.items()
                  if any(row.key in LEGACY_KEYS for row in flavor_rows)}
        summary.skipped += total - len(legacy)
        for flavor_id, flavor_rows in legacy.items():
            self._flavor(flavor_id, flavor_rows, summary)

    def _flavor(self, flavor_id: int,
                rows: list[database.ExtraSpecKeyRow],
                summary: sync.Summary) -> None:
        flavorid, name = rows[0].flavorid, rows[0].name
        label = _flavor_label(flavorid, name)
        extra_specs = {row.key: row.value for row in rows}
        try:
            migrated_extra_specs(extra_specs)
        except ConflictingValues as exc:
            summary.errors += 1
            LOG.error('Flavor %s: %s; left untouched. Keep the right value '
                      'under one name only (openstack flavor unset '
                      '--property KEY %s) and run again', label, exc,
                      flavorid)
            return
        summary.changed += 1
        LOG.info('Flavor %s: %s', label, describe_renames(extra_specs))
        if self.writer is None:
            return
        renames = tuple(
            (row.id, None if LEGACY_KEYS[row.key] in extra_specs
             else LEGACY_KEYS[row.key])
            for row in rows if row.key in LEGACY_KEYS)
        self.writer.add(backup.FlavorKeysRecord(
            flavor_id=flavor_id, flavorid=flavorid, name=name,
            rows=tuple(backup.ExtraSpecRow(row.id, row.key, row.value,
                                           row.created_at, row.updated_at)
                       for row in rows),
            renames=renames))

    def request_specs(self, engine: sa.engine.Engine, total: int) -> None:
        summary = self.tally[REQUEST_SPECS]
        pending: list[tuple[sa.Row, _Rewrite]] = []
        checked = 0
        with engine.connect() as connection:
            for page in database.iter_spec_pages(connection):
                for row in page:
                    checked += 1
                    self._progress(checked, total, 'request specs')
                    found = self._check_spec(row, summary)
                    if found is not None:
                        pending.append((row, found))
                if len(pending) >= _MAPPING_CHECK_EVERY:
                    self._record_specs(connection, pending, summary)
                    pending = []
            self._record_specs(connection, pending, summary)

    def _check_spec(self, row: sa.Row,
                    summary: sync.Summary) -> _Rewrite | None:
        spec_id, instance_uuid, text = row
        if not may_hold_legacy_keys(text):
            summary.skipped += 1
            return None
        try:
            found = self._specs.rewrite(text)
        except MalformedSpec as exc:
            summary.errors += 1
            LOG.error('RequestSpec %s (id %d): %s; left untouched',
                      instance_uuid, spec_id, exc)
            return None
        except ConflictingValues as exc:
            summary.errors += 1
            LOG.error('RequestSpec %s (id %d): its flavor has %s; left '
                      'untouched', instance_uuid, spec_id, exc)
            return None
        if found is None:
            summary.skipped += 1
        return found

    def _record_specs(self, connection: sa.engine.Connection,
                      pending: list[tuple[sa.Row, _Rewrite]],
                      summary: sync.Summary) -> None:
        if not pending:
            return
        # As in the sync: a RequestSpec without an instance mapping is a
        # leftover of an archived instance, which Nova never reads.
        mapped = database.mapped_instances(
            connection, [row[1] for row, _ in pending])
        connection.rollback()
        for (spec_id, instance_uuid, text), found in pending:
            if instance_uuid not in mapped:
                summary.skipped += 1
                if self.options.verbose:
                    LOG.info('Skipping %s: no instance mapping (instance '
                             'deleted and archived)', instance_uuid)
                continue
            summary.changed += 1
            if self.options.verbose:
                LOG.info('RequestSpec %s: %s', instance_uuid,
                         found.description)
            if self.writer is not None:
                self.writer.add(backup.BackupRecord(
                    id=spec_id, instance_uuid=instance_uuid, spec=text,
                    patch=found.patch))

    def instances(self, cell: _Cell) -> None:
        summary = self.tally[cell.uuid]
        try:
            with cell.engine.connect() as connection:
                total = database.count_instance_flavors(connection)
                LOG.info('Cell %s: found %d instances', cell.label, total)
                checked = 0
                for page in database.iter_instance_flavor_pages(connection):
                    for row in page:
                        checked += 1
                        self._progress(checked, total,
                                       f'instances in cell {cell.label}')
                        self._check_instance(cell, row, summary)
        except sa.exc.DBAPIError as exc:
            raise database.ConfigError(
                f'cell {cell.label}: cannot read its database: '
                f'{exc.orig or exc}; nothing was changed') from None

    def _check_instance(self, cell: _Cell, row: sa.Row,
                        summary: sync.Summary) -> None:
        row_id, instance_uuid, text = row
        if text is None or not may_hold_legacy_keys(text):
            summary.skipped += 1
            return
        try:
            found = self._instances.rewrite(text)
        except MalformedInstanceFlavor as exc:
            summary.errors += 1
            LOG.error('Instance %s in cell %s (instance_extra id %d): %s; '
                      'left untouched', instance_uuid, cell.label, row_id,
                      exc)
            return
        except ConflictingValues as exc:
            summary.errors += 1
            LOG.error('Instance %s in cell %s: its flavor (%s) has %s; left '
                      'untouched', instance_uuid, cell.label, exc.where, exc)
            return
        if found is None:
            summary.skipped += 1
            return
        summary.changed += 1
        if self.options.verbose:
            LOG.info('Instance %s in cell %s: %s', instance_uuid, cell.label,
                     found.description)
        if self.writer is not None:
            self.writer.add(backup.InstanceFlavorRecord(
                cell_uuid=cell.uuid, id=row_id, instance_uuid=instance_uuid,
                flavor=text, patch=found.patch))


def _write(engine: sa.engine.Engine, cells: dict[str, _Cell],
           options: MigrationOptions, plan: str, plan_sha256: str,
           tally: _Tally) -> None:
    """Rewrite the rows recorded in ``plan``, one transaction per batch,
    from the very bytes the scan sealed (as the sync's write pass)."""
    planned = tally.total().changed
    written = 0
    tally.reset_changed()
    with backup.BackupReader(plan) as reader:
        reader.verify(written_sha256=plan_sha256)
        for number, (place, batch) in enumerate(
                _place_batches(reader, options.batch_size), start=1):
            summary = tally[place]
            target = cells[place].engine if place in cells else engine
            try:
                with database.write_transaction(target) as connection:
                    written_in_batch = _WRITERS[_kind(place)](
                        connection, batch, summary)
            except sa.exc.DBAPIError as exc:
                summary.errors += len(batch)
                LOG.error('Batch %d (%d records, %s) rolled back: %s',
                          number, len(batch), tally.label(place).lower(),
                          exc.orig or exc)
                continue
            written += len(batch)
            summary.changed += written_in_batch
            if options.verbose:
                LOG.info('Progress: %d/%d records written', written,
                         planned)
            sync.stop_for_test(number)


def _write_flavors(connection: sa.engine.Connection,
                   batch: list[backup.FlavorKeysRecord],
                   summary: sync.Summary) -> int:
    current = database.current_key_rows(
        connection, [record.flavor_id for record in batch], ALL_KEYS)
    renames = []
    written = 0
    for record in batch:
        if current.get(record.flavor_id) != record.original:
            # Changed (or deleted) by the API since the scan: what the
            # operator did last wins over what the scan planned.
            summary.skipped += 1
            LOG.warning('Flavor %s changed during the migration; left as '
                        'it is now', _flavor_label(record.flavorid,
                                                   record.name))
            continue
        renames.extend(record.renames)
        written += 1
    database.rename_extra_specs(connection, renames)
    return written


def _write_specs(connection: sa.engine.Connection,
                 batch: list[backup.BackupRecord],
                 summary: sync.Summary) -> int:
    return sync.write_spec_batch(connection, batch, summary,
                                 activity='migration')


def _write_instances(connection: sa.engine.Connection,
                     batch: list[backup.InstanceFlavorRecord],
                     summary: sync.Summary) -> int:
    current = database.current_instance_flavors(
        connection, [record.id for record in batch])
    updates = []
    for record in batch:
        row = current.get(record.id)
        if (row is None or row.instance_uuid != record.instance_uuid or
                row.flavor != record.flavor):
            # Resized, reverted or deleted since the scan: Nova's copy is
            # newer than anything we could write.
            summary.skipped += 1
            LOG.warning('Instance %s changed during the migration; its '
                        'flavor left as Nova wrote it', record.instance_uuid)
            continue
        updates.append((record.id, record.synced))
    database.write_instance_flavors(connection, updates)
    return len(updates)


_WRITERS = {FLAVORS: _write_flavors, REQUEST_SPECS: _write_specs,
            INSTANCES: _write_instances}


def restore(engine: sa.engine.Engine, path: str, apply: bool,
            verbose: bool, batch_size: int = 500,
            config_file: str = database.DEFAULT_CONFIG_FILE
            ) -> sync.Summary:
    """Put back what a key migration's backup holds.

    As the sync's restore: the whole file is checked first, and a row is
    restored only where it is still as the migration left it. Every cell
    must answer before anything is written.
    """
    with backup.BackupReader(path) as reader:
        reader.verify()
        LOG.info('Backup timestamp: %s', reader.timestamp)
        LOG.info('Records in backup: %d', reader.records)
        with engine.connect() as connection:
            mappings = database.load_cell_mappings(connection)
        cells = _open_cells(mappings, config_file)
        try:
            for cell in cells:
                try:
                    with cell.engine.connect():
                        pass
                except sa.exc.DBAPIError as exc:
                    raise database.ConfigError(
                        f'cell {cell.label}: cannot reach its database: '
                        f'{exc.orig or exc}; nothing was restored'
                    ) from None
            tally = _Tally(cells)
            _restore(engine, {cell.uuid: cell for cell in cells}, reader,
                     apply, verbose, batch_size, tally)
        finally:
            _close_cells(cells)
    tally.log('Restored')
    return tally.total()


def _restore(engine: sa.engine.Engine, cells: dict[str, _Cell],
             reader: backup.BackupReader, apply: bool, verbose: bool,
             batch_size: int, tally: _Tally) -> None:
    done = 0
    for number, (place, batch) in enumerate(
            _place_batches(reader, batch_size), start=1):
        summary = tally[place]
        done += len(batch)
        if _kind(place) == INSTANCES and place not in cells:
            summary.skipped += len(batch)
            LOG.warning('Skipping %d instances of cell %s: no such cell '
                        'any more', len(batch), place)
            continue
        target = cells[place].engine if place in cells else engine
        try:
            if apply:
                with database.write_transaction(target) as connection:
                    _RESTORERS[_kind(place)](connection, batch, apply,
                                             verbose, summary)
            else:
                with target.connect() as connection:
                    _RESTORERS[_kind(place)](connection, batch, apply,
                                             verbose, summary)
        except sa.exc.DBAPIError as exc:
            summary.errors += len(batch)
            LOG.error('Batch %d (%d records) rolled back: %s', number,
                      len(batch), exc.orig or exc)
        if verbose:
            LOG.info('Progress: %d/%d records processed', done,
                     reader.records)


def _restore_flavors(connection: sa.engine.Connection,
                     batch: list[backup.FlavorKeysRecord], apply: bool,
                     verbose: bool, summary: sync.Summary) -> None:
    current = database.current_key_rows(
        connection, [record.flavor_id for record in batch], ALL_KEYS,
        lock=apply)
    for record in batch:
        label = _flavor_label(record.flavorid, record.name)
        rows = current.get(record.flavor_id)
        if rows is None:
            summary.skipped += 1
            if verbose:
                LOG.info('Skipping flavor %s: it no longer exists', label)
        elif rows == record.original:
            summary.skipped += 1
            if verbose:
                LOG.info('Skipping flavor %s: already as in the backup',
                         label)
        elif rows != record.migrated:
            summary.skipped += 1
            LOG.warning('Skipping flavor %s: its minimum keys changed after '
                        'the migration; restoring would undo that change',
                        label)
        else:
            summary.changed += 1
            if verbose:
                LOG.info('Restore: flavor %s', label)
            if apply:
                renames = dict(record.renames)
                database.put_back_extra_specs(
                    connection, record.flavor_id,
                    renamed=[row for row in record.rows
                             if renames.get(row.id)],
                    deleted=[row for row in record.rows
                             if row.id in renames and
                             renames[row.id] is None])


def _restore_specs(connection: sa.engine.Connection,
                   batch: list[backup.BackupRecord], apply: bool,
                   verbose: bool, summary: sync.Summary) -> None:
    sync.restore_spec_batch(connection, batch, apply, verbose, summary,
                            activity='migration')


def _restore_instances(connection: sa.engine.Connection,
                       batch: list[backup.InstanceFlavorRecord], apply: bool,
                       verbose: bool, summary: sync.Summary) -> None:
    current = database.current_instance_flavors(
        connection, [record.id for record in batch], lock=apply)
    updates = []
    for record in batch:
        row = current.get(record.id)
        if row is None or row.instance_uuid != record.instance_uuid:
            summary.skipped += 1
            if verbose:
                LOG.info('Skipping instance %s: it no longer exists',
                         record.instance_uuid)
        elif row.flavor == record.flavor:
            summary.skipped += 1
            if verbose:
                LOG.info('Skipping instance %s: already as in the backup',
                         record.instance_uuid)
        elif row.flavor != record.synced:
            summary.skipped += 1
            LOG.warning('Skipping instance %s: its flavor changed after '
                        'the migration; restoring would undo that change',
                        record.instance_uuid)
        else:
            summary.changed += 1
            if verbose:
                LOG.info('Restore: instance %s', record.instance_uuid)
            updates.append((record.id, record.flavor))
    if apply:
        database.write_instance_flavors(connection, updates)


_RESTORERS = {FLAVORS: _restore_flavors, REQUEST_SPECS: _restore_specs,
              INSTANCES: _restore_instances}
