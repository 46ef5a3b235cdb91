"""``xloud-nova-ext``: install, verify and uninstall the extension where
Nova runs (on the host, in a virtualenv, or inside a Nova container).

Exit status: 0 done (or nothing to do), 1 ``verify`` found something
missing, 2 refused (nothing was changed).
"""

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from nova_ext.deploy import checks, install, nova_env
from nova_ext.deploy.files import Refused

EXIT_OK = 0
EXIT_MISSING = 1
EXIT_REFUSED = 2
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
        'verify', help='prove each piece is live; non-zero exit when '
                       'anything is missing')
    _add_paths(verify)
    verify.add_argument('--config-dir', type=_path,
                        help='the --config-dir Nova runs with, if any: its '
                             'files can override nova.conf')
    verify.add_argument('--format', choices=('table', 'json'),
                        default='table')
    _add_auth(verify, argv)
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


def print_table(rows: list[checks.Row]) -> None:
    width = max(len(row.check) for row in rows)
    print(f'{"CHECK".ljust(width)}  STATUS  DETAIL')
    for row in rows:
        print(f'{row.check.ljust(width)}  {row.status.ljust(6)}  '
              f'{row.detail}')


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
    target = checks.Target(nova_conf=args.nova_conf,
                           api_paste=args.api_paste,
                           config_dir=args.config_dir,
                           roles=tuple(dict.fromkeys(args.role)),
                           session_adapter=_adapter(args))
    rows = checks.verify(target)
    if args.format == 'json':
        print(json.dumps([row.__dict__ for row in rows], indent=2))
    else:
        print_table(rows)
    failed = [row.check for row in rows if row.status == checks.FAIL]
    if failed:
        print(f'missing or broken: {", ".join(failed)}', file=sys.stderr)
        return EXIT_MISSING
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Nova's libraries warn about their own dependencies on import; that
    # noise would bury the table operators and automation read.
    warnings.simplefilter('ignore', DeprecationWarning)
    warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')
    logging.basicConfig(level=logging.ERROR,
                        format='%(levelname)s %(name)s: %(message)s')
    args = build_parser(argv).parse_args(argv)
    run = {'install': _run_install, 'uninstall': _run_uninstall,
           'verify': _run_verify}[args.command]
    try:
        return run(args)
    except Refused as exc:
        print(f'xloud-nova-ext {args.command}: refused: {exc}',
              file=sys.stderr)
        return EXIT_REFUSED


if __name__ == '__main__':
    sys.exit(main())
