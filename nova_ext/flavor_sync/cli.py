"""xloud-flavor-sync: refresh the flavor copies in Nova's RequestSpecs.

Nova copies the flavor into an instance's RequestSpec at boot and the
scheduler reads that copy for live migration and evacuation; this command
finds the copies that no longer match their flavor and rewrites them.
With ``--migrate-keys`` it renames the legacy ``minimum_cpu`` /
``minimum_memory`` extra specs instead, in the flavors and in every copy
of them (``key_migration``). ``doc/flavor-sync.md`` is the operator guide.

Exit status: 0 when done (and, with ``--verify``, everything is in sync or
migrated); 1 when ``--verify`` finds stale RequestSpecs (legacy keys) or
any record could not be processed or was refused; 2 when the command could
not run at all (bad arguments or configuration, unreachable database,
unusable backup).
"""

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence

import sqlalchemy as sa

from nova_ext.flavor_sync import backup, database, key_migration, sync

LOG = sync.LOG
STATE_DIR_NAME = 'xloud-flavor-sync'
# The console scripts, the first being the one ``python -m`` runs as.
PROGRAM_NAMES = ('xloud-flavor-sync', 'nova-fix-flavors')
LOG_FORMAT = '[%(asctime)s] [%(levelname)s] %(message)s'
DATE_FORMAT = '%Y-%m-%d %H:%M:%S'

EXIT_OK = 0
EXIT_ATTENTION = 1
EXIT_FAILURE = 2


def default_state_dir() -> str:
    """The invoking user's state directory (XDG base directory spec)."""
    base = os.environ.get('XDG_STATE_HOME') or os.path.join(
        os.path.expanduser('~'), '.local', 'state')
    return os.path.join(base, STATE_DIR_NAME)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError('must be at least 1')
    return number


def build_parser() -> argparse.ArgumentParser:
    invoked_as = os.path.basename(sys.argv[0])
    parser = argparse.ArgumentParser(
        prog=invoked_as if invoked_as in PROGRAM_NAMES else PROGRAM_NAMES[0],
        description='Synchronise the flavor stored in Nova RequestSpecs '
                    'with the current flavor definitions, or (with '
                    '--migrate-keys) rename the legacy minimum extra specs '
                    'everywhere. Dry run unless --run is given.')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--verify', action='store_true',
                      help='check only, print just the summary; exit '
                           'status 1 when RequestSpecs are out of sync')
    mode.add_argument('--list-backups', action='store_true',
                      help='list backup files with record counts')
    mode.add_argument('--restore', metavar='BACKUP_FILE',
                      help='restore RequestSpecs from a backup file (dry '
                           'run unless --run is given)')
    renames = ', '.join(f'{legacy} -> {new}' for legacy, new in
                        key_migration.LEGACY_KEYS.items())
    parser.add_argument('--migrate-keys', action='store_true',
                        help=f'rename the legacy extra specs ({renames}) '
                             f'in the flavors, the RequestSpecs and the '
                             f'instances of every cell, instead of a sync')
    parser.add_argument('--run', action='store_true',
                        help='write to the database (default: dry run)')
    parser.add_argument('--verbose', '-v', action='store_true',
                        help='show per-instance differences and progress')
    parser.add_argument('--no-backup', action='store_true',
                        help='do not keep a backup of the changed '
                             'RequestSpecs')
    parser.add_argument('--flavor', action='append', default=[],
                        metavar='FLAVOR',
                        help='only RequestSpecs of this flavor (ID or '
                             'name); repeatable')
    parser.add_argument('--instance', action='append', default=[],
                        metavar='UUID',
                        help='only the RequestSpec of this instance; '
                             'repeatable')
    parser.add_argument('--config-file',
                        default=database.DEFAULT_CONFIG_FILE,
                        help='nova.conf to read [api_database] connection '
                             'from (default: %(default)s)')
    parser.add_argument('--connection', metavar='URL',
                        help='SQLAlchemy URL of the nova_api database '
                             '(overrides --config-file)')
    parser.add_argument('--state-dir', default=None,
                        help='directory for backups/ and the log file '
                             '(default: $XDG_STATE_HOME/xloud-flavor-sync '
                             'or ~/.local/state/xloud-flavor-sync)')
    parser.add_argument('--log-file', default=None,
                        help='log file (default: STATE_DIR/flavor-sync.log)')
    parser.add_argument('--batch-size', type=_positive, default=500,
                        help='RequestSpecs written per transaction '
                             '(default: %(default)s)')
    return parser


class _ConsoleFilter(logging.Filter):
    """In --verify mode the console shows problems and the summary only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno >= logging.WARNING or
                getattr(record, 'console', False))


def _configure_logging(log_file: str, quiet: bool) -> list[logging.Handler]:
    formatter = logging.Formatter(LOG_FORMAT, DATE_FORMAT)
    console = logging.StreamHandler(sys.stdout)
    if quiet:
        console.addFilter(_ConsoleFilter())
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), mode=0o700,
                exist_ok=True)
    file_handler = logging.FileHandler(log_file, encoding='utf-8')
    handlers = [console, file_handler]
    for handler in handlers:
        handler.setFormatter(formatter)
        LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    return handlers


def _hide_password(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return '***'


def redacted(argv: Sequence[str]) -> list[str]:
    """The arguments with any database password masked, for the log."""
    shown = []
    hide_next = False
    for arg in argv:
        if hide_next:
            arg = _hide_password(arg)
        elif arg.startswith('--connection='):
            arg = '--connection=' + _hide_password(arg.split('=', 1)[1])
        hide_next = arg == '--connection'
        shown.append(arg)
    return shown


def _rerun_hint(argv: Sequence[str], parser: argparse.ArgumentParser) -> str:
    return shlex.join([parser.prog, *redacted(argv), '--run'])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.run and (args.verify or args.list_backups):
        parser.error('--run cannot be combined with --verify or '
                     '--list-backups')
    if args.no_backup and (args.restore or args.list_backups):
        parser.error('--no-backup applies to a sync only')
    if args.migrate_keys and (args.restore or args.list_backups):
        parser.error('--migrate-keys cannot be combined with --restore or '
                     '--list-backups')
    if (args.flavor or args.instance) and (args.restore or
                                           args.list_backups or
                                           args.migrate_keys):
        parser.error('--flavor and --instance apply to a sync only')

    state_dir = args.state_dir or default_state_dir()
    backup_dir = os.path.join(state_dir, 'backups')
    log_file = args.log_file or os.path.join(state_dir, 'flavor-sync.log')
    try:
        handlers = _configure_logging(log_file, args.verify and
                                      not args.verbose)
    except OSError as exc:
        print(f'error: cannot open log file {log_file}: {exc.strerror}',
              file=sys.stderr)
        return EXIT_FAILURE
    try:
        return _dispatch(args, argv, parser, backup_dir)
    except (database.ConfigError, backup.BackupError) as exc:
        LOG.error('%s', exc)
        return EXIT_FAILURE
    except sa.exc.SQLAlchemyError as exc:
        LOG.error('Database error: %s', getattr(exc, 'orig', None) or exc)
        return EXIT_FAILURE
    except OSError as exc:
        LOG.error('%s', exc)
        return EXIT_FAILURE
    finally:
        for handler in handlers:
            LOG.removeHandler(handler)
            handler.close()


def _dispatch(args: argparse.Namespace, argv: list[str],
              parser: argparse.ArgumentParser, backup_dir: str) -> int:
    if args.list_backups:
        return _list_backups(backup_dir)

    url = args.connection or database.connection_from_config(
        args.config_file)
    engine = database.create_engine(url)
    try:
        if args.restore:
            return _restore(engine, args, argv, parser)
        if args.migrate_keys:
            return _migrate_keys(engine, args, argv, parser, backup_dir)
        return _sync(engine, args, argv, parser, backup_dir)
    finally:
        engine.dispose()


def _list_backups(backup_dir: str) -> int:
    LOG.info('=== Available Backups ===')
    summaries = backup.list_backups(backup_dir)
    if not summaries:
        LOG.info('  no backups in %s', backup_dir)
    for summary in summaries:
        records = ('unreadable' if summary.records < 0
                   else f'{summary.records} records')
        LOG.info('  %s - %s - %s', os.path.basename(summary.path), records,
                 summary.timestamp)
    return EXIT_OK


def _mode(args: argparse.Namespace) -> str:
    if args.verify:
        return 'VERIFY'
    return 'LIVE RUN' if args.run else 'DRY RUN'


def _sync(engine: sa.engine.Engine, args: argparse.Namespace,
          argv: list[str], parser: argparse.ArgumentParser,
          backup_dir: str) -> int:
    started = time.monotonic()
    LOG.info('=== Starting Flavor Sync ===')
    LOG.info('Mode: %s', _mode(args))
    LOG.info('Connecting to database: %s', database.describe(engine))
    options = sync.SyncOptions(
        apply=args.run, keep_backup=not args.no_backup,
        verbose=args.verbose, flavors=args.flavor,
        instances=args.instance, batch_size=args.batch_size,
        backup_dir=backup_dir)
    summary = sync.synchronise(engine, options)
    LOG.info('=== Sync Complete (%.2f s) ===', time.monotonic() - started)
    # Without --run, Updated counts what a run would update.
    LOG.info('%s', summary.line('Updated'), extra={'console': True})
    if not args.run and not args.verify and summary.changed:
        LOG.info('>>> To apply changes, run: %s', _rerun_hint(argv, parser))
    if summary.errors or (args.verify and summary.changed):
        return EXIT_ATTENTION
    return EXIT_OK


def _migrate_keys(engine: sa.engine.Engine, args: argparse.Namespace,
                  argv: list[str], parser: argparse.ArgumentParser,
                  backup_dir: str) -> int:
    started = time.monotonic()
    LOG.info('=== Starting Minimum Keys Migration ===')
    LOG.info('Mode: %s', _mode(args))
    LOG.info('Connecting to database: %s', database.describe(engine))
    options = key_migration.MigrationOptions(
        apply=args.run, keep_backup=not args.no_backup,
        verbose=args.verbose, batch_size=args.batch_size,
        backup_dir=backup_dir, config_file=args.config_file)
    summary = key_migration.migrate(engine, options)
    LOG.info('=== Migration Complete (%.2f s) ===',
             time.monotonic() - started)
    # Without --run, Updated counts what a run would update.
    LOG.info('%s', summary.line('Updated'), extra={'console': True})
    if not args.run and not args.verify and summary.changed:
        LOG.info('>>> To apply changes, run: %s', _rerun_hint(argv, parser))
    if summary.errors or (args.verify and summary.changed):
        return EXIT_ATTENTION
    return EXIT_OK


def _restore(engine: sa.engine.Engine, args: argparse.Namespace,
             argv: list[str], parser: argparse.ArgumentParser) -> int:
    started = time.monotonic()
    LOG.info('=== Starting Restore from Backup ===')
    LOG.info('Mode: %s', _mode(args))
    LOG.info('Connecting to database: %s', database.describe(engine))
    LOG.info('Backup file: %s', args.restore)
    with backup.BackupReader(args.restore) as reader:
        kind = reader.kind
    if kind == backup.KEY_MIGRATION_FORMAT:
        summary = key_migration.restore(
            engine, args.restore, apply=args.run, verbose=args.verbose,
            batch_size=args.batch_size, config_file=args.config_file)
    else:
        summary = sync.restore(engine, args.restore, apply=args.run,
                               verbose=args.verbose,
                               batch_size=args.batch_size)
    LOG.info('=== Restore Complete (%.2f s) ===', time.monotonic() - started)
    LOG.info('%s', summary.line('Restored'), extra={'console': True})
    if not args.run and summary.changed:
        LOG.info('>>> To apply restore, run: %s', _rerun_hint(argv, parser))
    return EXIT_ATTENTION if summary.errors else EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
