"""``xloud-nova-ext``: install, verify and uninstall the extension where
Nova runs (on the host, in a virtualenv, or inside a Nova container), and
audit the elastic instances of the cloud.

Exit status: 0 done (or nothing to do), 2 refused (nothing was changed).

``verify`` (and ``xloud-status upgrade check``, the same checks under
``nova-status``'s name) exits as ``nova-status upgrade check`` does, with
oslo.upgradecheck's codes: 0 every check succeeded, 1 a warning (look at
it), 2 a failure, 255 the checks could not be run.

``audit`` (doc/audit.md), in the manner of ``nova-manage placement
audit``:

* 0: every elastic instance checked is in sync.
* 1: drift was found (with ``--fix``: drift remains after healing).
* 2: an error left something unchecked or unhealed (a cell or a compute
  host that did not answer, placement unreadable, Nova not reachable).
"""

import argparse
import json
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

from nova_ext.deploy import install, nova_env
from nova_ext.deploy.files import Refused

EXIT_OK = 0
EXIT_REFUSED = 2
# verify: oslo.upgradecheck's Code.FAILURE (the checks, which import it,
# are imported only once Nova is known to be there) and the status
# oslo.upgradecheck.run gives a run that raised.
EXIT_FAILURE = 2
EXIT_ERROR = 255
# audit; the same values as nova_ext.audit.EXIT_*, which is imported
# only when an audit runs.
EXIT_IN_SYNC = 0
EXIT_DRIFT = 1
EXIT_AUDIT_ERROR = 2
ROLES = ('api', 'compute')


def _progress(message: str) -> None:
    print(f'==> {message}', file=sys.stderr, flush=True)


def _path(value: str) -> Path:
    # Absolute, so the state records name the file wherever they are read.
    return Path(value).absolute()


def _add_paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--role', action='append', choices=ROLES,
                        required=True,
                        help='api: the paste filter (hosts running '
                             'nova-api); compute: the compute driver (hosts '
                             'running nova-compute). Repeat for both.')
    parser.add_argument('--nova-conf', type=_path,
                        default=nova_env.DEFAULT_NOVA_CONF,
                        help='nova.conf of this host (default: %(default)s)')
    parser.add_argument('--api-paste', type=_path,
                        default=nova_env.DEFAULT_API_PASTE,
                        help='api-paste.ini of nova-api '
                             '(default: %(default)s)')


def _add_auth(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    from keystoneauth1 import loading

    has_url = '--os-auth-url' in argv or any(
        a.startswith('--os-auth-url=') for a in argv) or \
        'OS_AUTH_URL' in os.environ
    group = parser.add_argument_group(
        'credentials', 'with these, verify also calls GET /os-xloud-adjust '
        'through Keystone (OS_* environment variables work too)')
    loading.register_auth_argparse_arguments(
        group, argv, default='password' if has_url else None)
    loading.register_session_argparse_arguments(group)
    group.add_argument('--os-interface',
                       default=os.environ.get('OS_INTERFACE', 'public'))
    group.add_argument('--os-region-name',
                       default=os.environ.get('OS_REGION_NAME'))
    group.add_argument('--os-compute-api-endpoint',
                       default=os.environ.get('OS_COMPUTE_API_ENDPOINT'),
                       help='compute endpoint to call instead of the one '
                            'in the catalog')


def _add_verify_options(parser: argparse.ArgumentParser,
                        argv: list[str]) -> None:
    _add_paths(parser)
    parser.add_argument('--config-dir', type=_path,
                        help='the --config-dir Nova runs with, if any: its '
                             'files can override nova.conf')
    _add_auth(parser, argv)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='xloud-nova-ext',
        description='Plug the elastic sizing extension into this host\'s '
                    'Nova, prove it is live, or take it out again.')
    commands = parser.add_subparsers(dest='command', required=True)
    for name, text in (
            ('install', 'back up and edit api-paste.ini / nova.conf'),
            ('uninstall', 'restore the files install changed')):
        _add_paths(commands.add_parser(name, help=text, description=text))
    verify = commands.add_parser(
        'verify', help='prove each piece is live, as nova-status upgrade '
                       'check: exit 0 success, 1 warning, 2 failure')
    _add_verify_options(verify, argv)
    verify.add_argument('--format', choices=('table', 'json'),
                        default='table')
    audit = commands.add_parser(
        'audit', help='compare the domain, the record and the placement '
                      'allocation of every elastic instance; --fix heals '
                      'them',
        description='Compare, for every elastic instance, libvirt\'s live '
                    'and persistent size, the recorded live and boot size '
                    'and the placement allocation, and print each '
                    'disagreement with what it means. Run where nova-manage '
                    'runs: it reads nova.conf and uses Nova\'s databases, '
                    'message bus and placement. Exit status 0 in sync, 1 '
                    'drift, 2 errors.')
    audit.add_argument('--host', help='only the instances of this compute '
                                      'host')
    audit.add_argument('--fix', action='store_true',
                       help='heal what can be healed (the domain wins; '
                            'placement grows only where there is room) and '
                            'audit the healed instances again')
    audit.add_argument('--format', choices=('table', 'json'),
                       default='table')
    audit.add_argument('--config-file', type=_path, action='append',
                       help='a Nova configuration file, as for nova-manage '
                            '(repeat for several; default: Nova\'s, e.g. '
                            '/etc/nova/nova.conf)')
    audit.add_argument('--config-dir', type=_path,
                       help='a directory of Nova configuration files')
    return parser


def _adapter(args: argparse.Namespace):
    from keystoneauth1 import adapter, loading

    auth = loading.load_auth_from_argparse_arguments(args)
    if auth is None:
        return None
    session = loading.load_session_from_argparse_arguments(args, auth=auth)
    return adapter.Adapter(
        session, service_type='compute', interface=args.os_interface,
        region_name=args.os_region_name,
        endpoint_override=args.os_compute_api_endpoint)


def _run_install(args: argparse.Namespace) -> int:
    steps = {'api': lambda apply: install.install_api(
                 args.api_paste, _progress, apply),
             'compute': lambda apply: install.install_compute(
                 args.nova_conf, _progress, apply)}
    roles = list(dict.fromkeys(args.role))
    # Every role is checked before any file is written.
    for role in roles:
        steps[role](False)
    for role in roles:
        print(steps[role](True).message)
    return EXIT_OK


def _run_uninstall(args: argparse.Namespace) -> int:
    for role in dict.fromkeys(args.role):
        if role == 'api':
            outcome = install.uninstall_api(args.api_paste, _progress)
        else:
            outcome = install.uninstall_compute(args.nova_conf, _progress)
        print(outcome.message)
    return EXIT_OK


def _run_verify(args: argparse.Namespace) -> int:
    # The checks need Nova's libraries: without Nova this is a refusal in
    # the operator's words (exit 2, a failure) rather than an ImportError.
    nova_env.installed_nova_version()
    try:
        return _verify(args)
    except Exception:
        # As oslo.upgradecheck.run: 255 is no check's code.
        from nova.i18n import _

        print(_('Error:\n%s') % traceback.format_exc(), file=sys.stderr)
        return EXIT_ERROR


def _verify(args: argparse.Namespace) -> int:
    from nova.i18n import _
    from oslo_upgradecheck.upgradecheck import Code

    from nova_ext.deploy import checks

    target = checks.Target(nova_conf=args.nova_conf,
                           api_paste=args.api_paste,
                           config_dir=args.config_dir,
                           roles=tuple(dict.fromkeys(args.role)),
                           session_adapter=_adapter(args))
    commands = checks.VerifyCommands(checks.checks_for(target))
    code = commands.check_json() if args.format == 'json' \
        else commands.check()
    if failed := commands.named(Code.FAILURE):
        print(_('missing or broken: %s') % ', '.join(failed),
              file=sys.stderr)
    if warned := commands.named(Code.WARNING):
        print(_('to look at: %s') % ', '.join(warned), file=sys.stderr)
    return int(code)


def _nova_admin_context(args: argparse.Namespace):
    """Set Nova up as nova-manage does; an admin context.

    Nova's configuration (``config.parse_args``: options, databases, the
    RPC transport), its objects, and the ``[xloud]`` options.
    """
    from nova import monkey_patch

    # A command line needs no green threads; an operator's
    # concurrency_backend (or OS_NOVA_DISABLE_EVENTLET_PATCHING) decides
    # as it does for Nova's own services.
    monkey_patch.patch(backend='threading')

    from nova import config, context, objects

    import nova_ext.conf  # noqa: F401 - registers [xloud]

    nova_argv = ['xloud-nova-ext']
    for path in args.config_file or ():
        nova_argv += ['--config-file', str(path)]
    if args.config_dir:
        nova_argv += ['--config-dir', str(args.config_dir)]
    config.parse_args(nova_argv)
    objects.register_all()
    return context.get_admin_context()


def _audit_rows(findings) -> list[tuple[str, ...]]:
    return [(finding.instance_uuid, finding.host or '-', finding.severity,
             finding.kind, finding.message) for finding in findings]


def _exposure_rows(nodes) -> list[tuple[str, ...]]:
    from nova.i18n import _

    rows = []
    for node in nodes:
        name = node.host if node.node == node.host else (
            f'{node.host} ({node.node})')
        if node.error:
            rows.append((name, '-', '-', '-', '-', '-', node.error))
            continue
        for resource, dimension in (('VCPU', node.vcpus),
                                    ('MEMORY_MB', node.memory_mb)):
            if dimension is None:
                continue
            rows.append((name, resource, str(dimension.capacity),
                         str(dimension.allocated), str(dimension.headroom),
                         str(dimension.potential),
                         _('yes') if dimension.over_capacity else _('no')))
    return rows


def _print_rows(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    # The last column (what it means) is long: it is not padded.
    widths = [max(len(str(row[index])) for row in [header, *rows])
              for index in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width)
                 for cell, width in zip(row, widths, strict=False)]
        print('  '.join([*cells, str(row[-1])]))


def print_audit(report) -> None:
    """The audit as operators read it: findings, healing, what remains."""
    from nova.i18n import _

    header = (_('SERVER'), _('HOST'), _('SEVERITY'), _('KIND'),
              _('WHAT IT MEANS'))
    if report.findings:
        _print_rows(header, _audit_rows(report.findings))
    if report.healed:
        print()
        print(_('Healed:'))
        for healed in report.healed:
            for change in healed.changes:
                print(f'  {healed.instance_uuid} ({healed.host}): {change}')
            for error in healed.errors:
                print('  ' + _('%(uuid)s (%(host)s): not healed: '
                               '%(error)s') % {
                    'uuid': healed.instance_uuid, 'host': healed.host,
                    'error': error})
            if not healed.changes and not healed.errors:
                print('  ' + _('%(uuid)s (%(host)s): nothing to change') % {
                    'uuid': healed.instance_uuid, 'host': healed.host})
        print()
        if report.remaining:
            print(_('Remaining after healing:'))
            _print_rows(header, _audit_rows(report.remaining))
        else:
            print(_('Nothing remains after healing.'))
    if report.skipped:
        print()
        print(_('Not checked:'))
        for skipped in report.skipped:
            print(f'  {skipped.instance_uuid} ({skipped.host}): '
                  f'{skipped.reason}')
    if report.errors:
        print()
        print(_('Errors:'))
        for error in report.errors:
            print(f'  {error}')
    if report.host_exposure:
        print()
        print(_('Burst exposure (every elastic guest at its maximum):'))
        _print_rows((_('HOST'), _('RESOURCE'), _('CAPACITY'), _('ALLOCATED'),
                     _('HEADROOM'), _('POTENTIAL'), _('OVER CAPACITY')),
                    _exposure_rows(report.host_exposure))
    print()
    critical = sum(1 for finding in report.remaining
                   if finding.severity == 'critical')
    print(_('%(instances)d elastic instances on %(hosts)d hosts, %(checked)d '
            'checked: %(findings)d findings (%(critical)d critical), '
            '%(skipped)d not checked, %(errors)d errors; %(status)s') % {
        'instances': len(report.instances), 'hosts': len(report.hosts),
        'checked': report.checked, 'findings': len(report.remaining),
        'critical': critical, 'skipped': len(report.skipped),
        'errors': len(report.errors), 'status': report.status})


def audit_command(context, args: argparse.Namespace) -> int:
    """Run the audit with Nova set up; print it; its exit status."""
    from nova_ext import audit

    try:
        report = audit.run(context, host=args.host, fix=args.fix,
                           progress=_progress)
    except Exception as exc:
        # Nova's databases or message bus did not answer: nothing was
        # audited.
        print(f'xloud-nova-ext audit: {type(exc).__name__}: {exc}',
              file=sys.stderr)
        return EXIT_AUDIT_ERROR
    if args.format == 'json':
        print(json.dumps({'audit': report.to_dict()}, indent=2))
    else:
        print_audit(report)
    return report.exit_code


def _run_audit(args: argparse.Namespace) -> int:
    try:
        context = _nova_admin_context(args)
    except Exception as exc:
        print(f'xloud-nova-ext audit: cannot read Nova\'s configuration: '
              f'{type(exc).__name__}: {exc}', file=sys.stderr)
        return EXIT_AUDIT_ERROR
    return audit_command(context, args)


def _quiet() -> None:
    # Nova's libraries warn about their own dependencies on import; that
    # noise would bury the table operators and automation read.
    warnings.simplefilter('ignore', DeprecationWarning)
    warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')
    logging.basicConfig(level=logging.ERROR,
                        format='%(levelname)s %(name)s: %(message)s')


def build_status_parser(argv: list[str]) -> argparse.ArgumentParser:
    """``xloud-status upgrade check``: verify under the name and options
    of ``nova-status upgrade check`` (``--json``), for runbooks that call
    the ``<project>-status upgrade check`` of each service."""
    parser = argparse.ArgumentParser(
        prog='xloud-status',
        description='The checks of xloud-nova-ext verify, as nova-status '
                    'upgrade check: exit 0 success, 1 warning, 2 failure, '
                    '255 error.')
    categories = parser.add_subparsers(dest='category', required=True)
    upgrade = categories.add_parser('upgrade', help='upgrade readiness')
    upgrade.add_argument('action', choices=('check',))
    upgrade.add_argument('--json', action='store_true',
                         help='the results as JSON instead of the table')
    _add_verify_options(upgrade, argv)
    return parser


def status_main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _quiet()
    args = build_status_parser(argv).parse_args(argv)
    args.format = 'json' if args.json else 'table'
    try:
        return _run_verify(args)
    except Refused as exc:
        print(f'xloud-status upgrade check: refused: {exc}', file=sys.stderr)
        return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _quiet()
    args = build_parser(argv).parse_args(argv)
    run = {'install': _run_install, 'uninstall': _run_uninstall,
           'verify': _run_verify, 'audit': _run_audit}[args.command]
    try:
        return run(args)
    except Refused as exc:
        print(f'xloud-nova-ext {args.command}: refused: {exc}',
              file=sys.stderr)
        return EXIT_REFUSED


if __name__ == '__main__':
    sys.exit(main())
