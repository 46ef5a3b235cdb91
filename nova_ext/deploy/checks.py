"""Proofs that each piece of the extension is live, through Nova's own
plug points rather than by reading Nova's code.

Every check returns a ``Row``; an exception inside a check is reported as
that check failing, so one broken piece never hides the others.
"""

import dataclasses
import importlib.metadata
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from nova_ext.deploy import nova_conf, nova_env, paste_ini
from nova_ext.deploy.files import EditRecord, Refused, read_text

if TYPE_CHECKING:
    from keystoneauth1.adapter import Adapter

OK = 'ok'
FAIL = 'FAIL'
SKIP = 'skip'

# What this release registers, stated here rather than read from the
# installed plugin, so that verify catches a plugin that lost one.
VALIDATED_SPECS = ('xloud:minimum_cpu', 'xloud:minimum_memory',
                   'minimum_cpu', 'minimum_memory')
POLICY_RULES = ('xloud:elastic_sizing:adjust', 'xloud:elastic_sizing:show',
                'xloud:elastic_sizing:index',
                'xloud:elastic_sizing:index:all_tenants',
                'xloud:elastic_sizing:audit')
VALIDATOR_NAMESPACE = 'nova.api.extra_spec_validators'
POLICY_NAMESPACE = 'oslo.policy.policies'
ENTRY_POINT_NAME = 'xloud'


@dataclasses.dataclass
class Row:
    check: str
    status: str
    detail: str


@dataclasses.dataclass
class Target:
    """What ``verify`` looks at; paths are as seen by this host."""

    nova_conf: Path
    api_paste: Path | None
    config_dir: Path | None = None
    roles: tuple[str, ...] = ('api',)
    session_adapter: 'Adapter | None' = None


def _guarded(name: str, check: Callable[[], Row]) -> Row:
    try:
        return check()
    except Refused as exc:
        return Row(name, FAIL, str(exc))
    except Exception as exc:  # reported as this check failing
        return Row(name, FAIL, f'{type(exc).__name__}: {exc}')


def nova_version() -> Row:
    version = nova_env.installed_nova_version()
    if nova_env.is_supported(version):
        return Row('nova version', OK,
                   f'{version} (supported {nova_env.supported_range()})')
    return Row('nova version', FAIL,
               f'{version} is outside the supported range '
               f'{nova_env.supported_range()}')


def package() -> Row:
    import nova_ext

    version = importlib.metadata.version('xloud-elastic')
    return Row('package', OK, f'xloud-elastic {version} '
               f'({Path(nova_ext.__file__).parent})')


def extra_spec_validators() -> Row:
    from nova import exception
    from nova.api.validation.extra_specs import validators
    from stevedore import extension

    failures: list[str] = []

    def _record(_mgr, entry_point, err):
        failures.append(f'{entry_point.name}: {err}')

    mgr = extension.ExtensionManager(
        VALIDATOR_NAMESPACE, invoke_on_load=False,
        on_load_failure_callback=_record)
    if ENTRY_POINT_NAME not in mgr.names():
        return Row('extra spec validators', FAIL,
                   f'no "{ENTRY_POINT_NAME}" plugin in {VALIDATOR_NAMESPACE}'
                   + (f' ({"; ".join(failures)})' if failures else ''))
    validators.load_validators()
    missing = [s for s in VALIDATED_SPECS if s not in validators.VALIDATORS]
    if missing:
        return Row('extra spec validators', FAIL,
                   f'Nova loaded the plugin but has no validator for '
                   f'{", ".join(missing)}')
    for spec in VALIDATED_SPECS:
        try:
            validators.validate(spec, 'not-a-number')
        except exception.ValidationError:
            continue
        return Row('extra spec validators', FAIL,
                   f'{spec}=not-a-number was accepted')
    return Row('extra spec validators', OK,
               f'{", ".join(VALIDATED_SPECS)} validated by Nova '
               f'(plugin {mgr[ENTRY_POINT_NAME].entry_point.value})')


def policy_rules() -> Row:
    from nova import policy

    entry_points = importlib.metadata.entry_points(
        group=POLICY_NAMESPACE, name=ENTRY_POINT_NAME)
    if not entry_points:
        return Row('policy rules', FAIL,
                   f'no "{ENTRY_POINT_NAME}" entry point in '
                   f'{POLICY_NAMESPACE}')
    listed = {rule.name: rule
              for rule in next(iter(entry_points)).load()()}
    missing = [r for r in POLICY_RULES if r not in listed]
    if missing:
        return Row('policy rules', FAIL,
                   f'not listed by the extension: {", ".join(missing)}')
    from nova_ext import policies

    # What the API filter does on the first request it serves: register
    # the defaults on Nova's enforcer, which loads the deployment's policy
    # file, so overrides show up here as they will in nova-api.
    policy.reset()
    policies.register_rules()
    enforcer = policy._ENFORCER
    unregistered = [r for r in POLICY_RULES
                    if r not in enforcer.registered_rules]
    if unregistered:
        return Row('policy rules', FAIL,
                   f'not registered on Nova\'s enforcer: '
                   f'{", ".join(unregistered)}')
    overridden = [name for name in POLICY_RULES
                  if name in enforcer.file_rules]
    detail = f'{len(POLICY_RULES)} rules on Nova\'s enforcer'
    if overridden:
        detail += ('; overridden by the policy file: '
                   + ', '.join(f'{n}="{enforcer.rules[n]}"'
                               for n in overridden))
    return Row('policy rules', OK, detail)


def _next_app(app):
    for attribute in ('application', '_app', 'app'):
        inner = getattr(app, attribute, None)
        if inner is not None and callable(inner):
            return inner
    return None


def _describe(app) -> str:
    kind = type(app)
    func = getattr(app, 'func', None)  # webob.dec.wsgify
    if func is not None:
        return f'{func.__module__}.{getattr(func, "__qualname__", func)}'
    return f'{kind.__module__}.{kind.__qualname__}'


def loaded_pipeline(api_paste: Path) -> list[str]:
    """The v2.1 API as Nova's paste loader builds it, outermost first."""
    from paste import deploy

    app = deploy.loadapp(f'config:{api_paste.resolve()}',
                         name=paste_ini.COMPOSITE.split(':', 1)[1])
    chain = []
    while app is not None and len(chain) < 50:
        chain.append(_describe(app))
        app = _next_app(app)
    return chain


def paste_filter(api_paste: Path) -> Row:
    chain = loaded_pipeline(api_paste)
    ours = [i for i, name in enumerate(chain)
            if name.startswith('nova_ext.')]
    context = [i for i, name in enumerate(chain)
               if name.endswith('NovaKeystoneContext')]
    short = ' > '.join(name.rsplit('.', 1)[-1] for name in chain)
    if not ours:
        return Row('paste filter loaded', FAIL,
                   f'not in the loaded pipeline: {short}')
    if not context or ours[0] != context[0] + 1:
        return Row('paste filter loaded', FAIL,
                   f'loaded but not right after keystonecontext: {short}')
    return Row('paste filter loaded', OK, short)


def api_answer(adapter: 'Adapter | None') -> Row:
    if adapter is None:
        return Row('api answers', SKIP,
                   'no credentials given (--os-auth-url ... or OS_* '
                   'variables) to call GET /os-xloud-adjust')
    response = adapter.get('/os-xloud-adjust', raise_exc=False)
    if response.status_code != 200:
        return Row('api answers', FAIL,
                   f'GET {response.url} returned {response.status_code}: '
                   f'{response.text[:200]}')
    servers = response.json().get('servers')
    if not isinstance(servers, list):
        return Row('api answers', FAIL,
                   f'GET {response.url} answered without "servers": '
                   f'{response.text[:200]}')
    return Row('api answers', OK,
               f'GET {response.url} -> 200, {len(servers)} servers')


def compute_hosts_via_api(adapter: 'Adapter | None') -> Row:
    """Which compute hosts run the elastic driver, as far as the API can
    tell: Nova's API shows no host's driver, but the live size of a server
    is read from its host over RPC by an endpoint only the elastic driver
    serves, so ``"source": "live"`` for one ACTIVE server per host proves
    that host's driver answered."""
    if adapter is None:
        return Row('compute hosts (API)', SKIP,
                   'no credentials given; run verify --role compute on '
                   'each compute host')
    listing = adapter.get('/os-xloud-adjust?all_tenants=1', raise_exc=False)
    if listing.status_code != 200:
        return Row('compute hosts (API)', FAIL,
                   f'GET {listing.url} returned {listing.status_code}')
    probes: dict[str, str] = {}
    for server in listing.json().get('servers', []):
        if server.get('status') == 'ACTIVE' and server.get('host'):
            probes.setdefault(server['host'], server['id'])
    live, silent = [], []
    for host, server_id in sorted(probes.items()):
        shown = adapter.get(f'/os-xloud-adjust/{server_id}',
                            raise_exc=False)
        source = shown.json().get('server', {}).get('source') \
            if shown.status_code == 200 else f'HTTP {shown.status_code}'
        (live if source == 'live' else silent).append(
            f'{host} (server {server_id}: {source})')
    if not probes:
        return Row('compute hosts (API)', SKIP,
                   'no ACTIVE server to probe a host with')
    detail = f'elastic driver answering on {len(live)} of {len(probes)} ' \
             f'hosts with an ACTIVE server'
    if live:
        detail += f'; live: {", ".join(live)}'
    if silent:
        detail += f'; not answering: {", ".join(silent)}'
        return Row('compute hosts (API)', FAIL, detail)
    return Row('compute hosts (API)', OK, detail)


def api_paste_file(api_paste: Path) -> Row:
    text = read_text(api_paste, 'api-paste.ini')
    if paste_ini.state(str(api_paste), text) != 'installed':
        return Row('api-paste.ini', FAIL,
                   f'{api_paste}: [{paste_ini.FILTER_SECTION}] not '
                   f'configured (run: xloud-nova-ext install --role api)')
    return Row('api-paste.ini', OK, _record_detail(api_paste))


def _record_detail(path: Path) -> str:
    record = EditRecord.load(path)
    if record is None:
        return f'{path}: configured (no backup: edited before this tool)'
    return f'{path}: configured {record.installed_at}, ' \
           f'backup {record.backup}'


def _config_files(argv: list[str]) -> set[Path]:
    """The --config-file arguments of a Nova command line; oslo.config
    falls back to /etc/nova/nova.conf without them."""
    files = set()
    for index, arg in enumerate(argv):
        if arg == '--config-file' and index + 1 < len(argv):
            files.add(Path(argv[index + 1]).absolute())
        elif arg.startswith('--config-file='):
            files.add(Path(arg.split('=', 1)[1]).absolute())
    return files or {nova_env.DEFAULT_NOVA_CONF}


def _compute_processes(nova_conf: Path) -> Iterator[tuple[int, float]]:
    """(pid, start time) of the nova-compute processes on this host that
    read ``nova_conf``."""
    ticks = os.sysconf('SC_CLK_TCK')
    boot = next(float(line.split()[1])
                for line in Path('/proc/stat').read_text().splitlines()
                if line.startswith('btime '))
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / 'cmdline').read_bytes().split(b'\0')
            stat = (entry / 'stat').read_text()
        except OSError:
            continue
        argv = [a.decode(errors='replace') for a in raw if a]
        # "nova-compute ..." or "python .../nova-compute ...".
        if not any(Path(a).name == 'nova-compute' for a in argv[:2]):
            continue
        if nova_conf.absolute() not in _config_files(argv):
            continue
        fields = stat.rsplit(')', 1)[1].split()
        yield int(entry.name), boot + int(fields[19]) / ticks


def compute_driver(target: Target) -> Row:
    import nova.conf
    from nova.virt.libvirt import driver as libvirt_driver
    from oslo_utils import importutils

    driver = nova.conf.CONF.compute_driver
    if driver != nova_conf.XLOUD_DRIVER:
        return Row('compute driver', FAIL,
                   f'Nova reads compute_driver = {driver} from '
                   f'{target.nova_conf}')
    cls = importutils.import_class(f'nova.virt.{driver}')
    if not issubclass(cls, libvirt_driver.LibvirtDriver):
        return Row('compute driver', FAIL,
                   f'nova.virt.{driver} is not a LibvirtDriver')
    detail = f'{driver} -> {cls.__module__}.{cls.__qualname__}'
    files = [target.nova_conf]
    if target.config_dir is not None:
        files += sorted(target.config_dir.glob('*.conf'))
    changed = max(f.stat().st_mtime for f in files)
    processes = list(_compute_processes(target.nova_conf))
    # Start times derive from /proc/stat's btime, whole seconds: allow one.
    stale = [pid for pid, started in processes if started + 1 < changed]
    if stale:
        return Row('compute driver', FAIL,
                   f'{detail}; nova-compute (pid {stale}) started before '
                   f'the configuration changed: restart it')
    if processes:
        detail += (f'; running nova-compute (pid '
                   f'{[pid for pid, _ in processes]}) started after the '
                   f'change')
    else:
        detail += (f'; no nova-compute process reading {target.nova_conf} '
                   f'on this host (it runs this driver from its next '
                   f'start)')
    return Row('compute driver', OK, detail)


def nova_conf_file(nova_conf_path: Path) -> Row:
    text = read_text(nova_conf_path, 'nova.conf')
    driver = nova_conf.current_driver(str(nova_conf_path), text)
    if driver != nova_conf.XLOUD_DRIVER:
        return Row('nova.conf', FAIL,
                   f'{nova_conf_path}: compute_driver = {driver} (run: '
                   f'xloud-nova-ext install --role compute)')
    record = EditRecord.load(nova_conf_path)
    detail = _record_detail(nova_conf_path)
    if record is not None:
        detail += (f', previous compute_driver = '
                   f'{record.details.get("previous_compute_driver")}')
    return Row('nova.conf', OK, detail)


def nova_configuration(target: Target) -> Row:
    read_text(target.nova_conf, 'nova.conf')
    nova_env.load_nova(target.nova_conf, target.config_dir)
    source = str(target.nova_conf)
    if target.config_dir is not None:
        source += f' + {target.config_dir}/*.conf'
    return Row('nova configuration', OK, f'parsed by Nova: {source}')


def verify(target: Target) -> list[Row]:
    """Run every check that applies to ``target``'s roles."""
    rows = [_guarded('nova version', nova_version),
            _guarded('package', package),
            # Nova's CONF must be parsed before the policy, paste and
            # driver checks read it.
            _guarded('nova configuration',
                     lambda: nova_configuration(target))]
    if 'api' in target.roles:
        api_paste = target.api_paste
        rows += [
            _guarded('api-paste.ini', lambda: api_paste_file(api_paste)),
            _guarded('extra spec validators', extra_spec_validators),
            _guarded('policy rules', policy_rules),
            _guarded('paste filter loaded', lambda: paste_filter(api_paste)),
            _guarded('api answers',
                     lambda: api_answer(target.session_adapter)),
            _guarded('compute hosts (API)',
                     lambda: compute_hosts_via_api(target.session_adapter)),
        ]
    if 'compute' in target.roles:
        rows += [
            _guarded('nova.conf', lambda: nova_conf_file(target.nova_conf)),
            _guarded('compute driver', lambda: compute_driver(target)),
        ]
    return rows
