"""Proofs that each piece of the extension is live, through Nova's own
plug points rather than by reading Nova's code, as oslo.upgradecheck
checks: ``xloud-nova-ext verify`` reads like ``nova-status upgrade check``.

Every check returns an ``upgradecheck.Result``; an exception inside a check
is reported as that check failing, so one broken piece never hides the
others.

This module imports Nova's translator and oslo.upgradecheck, both of which
come with Nova: ``cli`` imports it only once it knows Nova is installed.
"""

import dataclasses
import importlib.metadata
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nova.i18n import _
from oslo_upgradecheck import upgradecheck
from oslo_upgradecheck.upgradecheck import Code, Result

from nova_ext.deploy import nova_conf, nova_env, paste_ini
from nova_ext.deploy.files import EditRecord, Refused, read_text

if TYPE_CHECKING:
    from keystoneauth1.adapter import Adapter

# What this release registers, stated here rather than read from the
# installed plugin, so that verify catches a plugin that lost one
# (tests/deploy/test_upgradecheck.py fails when these fall behind
# nova_ext.api.extra_specs and nova_ext.policies).
VALIDATED_SPECS = ('xloud:minimum_cpu', 'xloud:minimum_memory',
                   'xloud:memory_model', 'xloud:autosize',
                   'minimum_cpu', 'minimum_memory')
POLICY_RULES = ('xloud:elastic_sizing:adjust', 'xloud:elastic_sizing:show',
                'xloud:elastic_sizing:index',
                'xloud:elastic_sizing:index:all_tenants',
                'xloud:elastic_sizing:audit',
                'xloud:elastic_sizing:flavor_minimums',
                'xloud:elastic_sizing:host_exposure',
                'xloud:elastic_sizing:autopilot')
# Not a valid value for any of VALIDATED_SPECS: integers or enumerations.
INVALID_SPEC_VALUE = 'not-a-number'
VALIDATOR_NAMESPACE = 'nova.api.extra_spec_validators'
POLICY_NAMESPACE = 'oslo.policy.policies'
ENTRY_POINT_NAME = 'xloud'

Check = Callable[[], Result]


@dataclasses.dataclass
class Target:
    """What ``verify`` looks at; paths are as seen by this host."""

    nova_conf: Path
    api_paste: Path | None
    config_dir: Path | None = None
    roles: tuple[str, ...] = ('api',)
    session_adapter: 'Adapter | None' = None


def _success(details: str) -> Result:
    return Result(Code.SUCCESS, details)


def _warning(details: str) -> Result:
    return Result(Code.WARNING, details)


def _failure(details: str) -> Result:
    return Result(Code.FAILURE, details)


def guarded(check: Check) -> Result:
    try:
        return check()
    except Refused as exc:
        return _failure(str(exc))
    except Exception as exc:  # reported as this check failing
        return _failure(f'{type(exc).__name__}: {exc}')


def nova_version() -> Result:
    version = nova_env.installed_nova_version()
    if nova_env.is_supported(version):
        return _success(_('%(version)s (supported %(range)s)') % {
            'version': version, 'range': nova_env.supported_range()})
    return _failure(_('%(version)s is outside the supported range '
                      '%(range)s') % {
        'version': version, 'range': nova_env.supported_range()})


def package() -> Result:
    import nova_ext

    version = importlib.metadata.version('xloud-elastic')
    return _success(_('xloud-elastic %(version)s (%(path)s)') % {
        'version': version, 'path': Path(nova_ext.__file__).parent})


def extra_spec_validators() -> Result:
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
        details = _('no "%(name)s" plugin in %(namespace)s') % {
            'name': ENTRY_POINT_NAME, 'namespace': VALIDATOR_NAMESPACE}
        if failures:
            details += f' ({"; ".join(failures)})'
        return _failure(details)
    validators.load_validators()
    missing = [s for s in VALIDATED_SPECS if s not in validators.VALIDATORS]
    if missing:
        return _failure(_('Nova loaded the plugin but has no validator for '
                          '%s') % ', '.join(missing))
    for spec in VALIDATED_SPECS:
        try:
            validators.validate(spec, INVALID_SPEC_VALUE)
        except exception.ValidationError:
            continue
        return _failure(_('%(spec)s=%(value)s was accepted') % {
            'spec': spec, 'value': INVALID_SPEC_VALUE})
    return _success(_('%(specs)s validated by Nova (plugin %(plugin)s)') % {
        'specs': ', '.join(VALIDATED_SPECS),
        'plugin': mgr[ENTRY_POINT_NAME].entry_point.value})


def policy_rules() -> Result:
    from nova import policy

    entry_points = importlib.metadata.entry_points(
        group=POLICY_NAMESPACE, name=ENTRY_POINT_NAME)
    if not entry_points:
        return _failure(_('no "%(name)s" entry point in %(namespace)s') % {
            'name': ENTRY_POINT_NAME, 'namespace': POLICY_NAMESPACE})
    listed = {rule.name: rule
              for rule in next(iter(entry_points)).load()()}
    missing = [r for r in POLICY_RULES if r not in listed]
    if missing:
        return _failure(_('not listed by the extension: %s')
                        % ', '.join(missing))
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
        return _failure(_('not registered on Nova\'s enforcer: %s')
                        % ', '.join(unregistered))
    overridden = [name for name in POLICY_RULES
                  if name in enforcer.file_rules]
    details = _('%d rules on Nova\'s enforcer') % len(POLICY_RULES)
    if overridden:
        # An override is the deployment's own decision: shown, not warned.
        details += '; ' + _('overridden by the policy file: %s') % ', '.join(
            f'{n}="{enforcer.rules[n]}"' for n in overridden)
    return _success(details)


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


def paste_filter(api_paste: Path) -> Result:
    chain = loaded_pipeline(api_paste)
    ours = [i for i, name in enumerate(chain)
            if name.startswith('nova_ext.')]
    context = [i for i, name in enumerate(chain)
               if name.endswith('NovaKeystoneContext')]
    short = ' > '.join(name.rsplit('.', 1)[-1] for name in chain)
    if not ours:
        return _failure(_('not in the loaded pipeline: %s') % short)
    if not context or ours[0] != context[0] + 1:
        return _failure(_('loaded but not right after keystonecontext: %s')
                        % short)
    return _success(short)


# Without credentials the two API checks are not run. That is a WARNING,
# not a SUCCESS: the live call is the one proof of an API host the local
# checks cannot give (a load balancer or catalog pointing elsewhere), so a
# runbook should look; nothing was found broken, so it is no FAILURE.
def api_answer(adapter: 'Adapter | None') -> Result:
    if adapter is None:
        return _warning(_('not checked: no credentials given '
                          '(--os-auth-url ... or OS_* variables) to call '
                          'GET /os-xloud-adjust'))
    response = adapter.get('/os-xloud-adjust', raise_exc=False)
    if response.status_code != 200:
        return _failure(_('GET %(url)s returned %(status)s: %(text)s') % {
            'url': response.url, 'status': response.status_code,
            'text': response.text[:200]})
    servers = response.json().get('servers')
    if not isinstance(servers, list):
        return _failure(_('GET %(url)s answered without "servers": '
                          '%(text)s') % {
            'url': response.url, 'text': response.text[:200]})
    return _success(_('GET %(url)s -> 200, %(count)d servers') % {
        'url': response.url, 'count': len(servers)})


def compute_hosts_via_api(adapter: 'Adapter | None') -> Result:
    """Which compute hosts run the elastic driver, as far as the API can
    tell: Nova's API shows no host's driver, but the live size of a server
    is read from its host over RPC by an endpoint only the elastic driver
    serves, so ``"source": "live"`` for one ACTIVE server per host proves
    that host's driver answered."""
    if adapter is None:
        return _warning(_('not checked: no credentials given; run verify '
                          '--role compute on each compute host'))
    listing = adapter.get('/os-xloud-adjust?all_tenants=1', raise_exc=False)
    if listing.status_code != 200:
        return _failure(_('GET %(url)s returned %(status)s') % {
            'url': listing.url, 'status': listing.status_code})
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
        # A cloud with no running server (a fresh one) is nothing to look
        # at; verify --role compute proves each host's driver there.
        return _success(_('no ACTIVE server to probe a host with'))
    details = _('elastic driver answering on %(live)d of %(hosts)d hosts '
                'with an ACTIVE server') % {
        'live': len(live), 'hosts': len(probes)}
    if live:
        details += '; ' + _('live: %s') % ', '.join(live)
    if silent:
        details += '; ' + _('not answering: %s') % ', '.join(silent)
        return _failure(details)
    return _success(details)


def api_paste_file(api_paste: Path) -> Result:
    text = read_text(api_paste, 'api-paste.ini')
    if paste_ini.state(str(api_paste), text) != 'installed':
        return _failure(_('%(path)s: [%(section)s] not configured (run: '
                          'xloud-nova-ext install --role api)') % {
            'path': api_paste, 'section': paste_ini.FILTER_SECTION})
    return _success(_record_details(api_paste))


def _record_details(path: Path) -> str:
    record = EditRecord.load(path)
    if record is None:
        return _('%s: configured (no backup: edited before this tool)') \
            % path
    return _('%(path)s: configured %(when)s, backup %(backup)s') % {
        'path': path, 'when': record.installed_at, 'backup': record.backup}


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


def compute_driver(target: Target) -> Result:
    import nova.conf
    from nova.virt.libvirt import driver as libvirt_driver
    from oslo_utils import importutils

    driver = nova.conf.CONF.compute_driver
    if driver != nova_conf.XLOUD_DRIVER:
        return _failure(_('Nova reads compute_driver = %(driver)s from '
                          '%(path)s') % {
            'driver': driver, 'path': target.nova_conf})
    cls = importutils.import_class(f'nova.virt.{driver}')
    if not issubclass(cls, libvirt_driver.LibvirtDriver):
        return _failure(_('nova.virt.%s is not a LibvirtDriver') % driver)
    details = f'{driver} -> {cls.__module__}.{cls.__qualname__}'
    files = [target.nova_conf]
    if target.config_dir is not None:
        files += sorted(target.config_dir.glob('*.conf'))
    changed = max(f.stat().st_mtime for f in files)
    processes = list(_compute_processes(target.nova_conf))
    # Start times derive from /proc/stat's btime, whole seconds: allow one.
    stale = [pid for pid, started in processes if started + 1 < changed]
    if stale:
        return _failure(details + '; ' + _(
            'nova-compute (pid %s) started before the configuration '
            'changed: restart it') % stale)
    if processes:
        details += '; ' + _('running nova-compute (pid %s) started after '
                            'the change') % [pid for pid, _start in processes]
    else:
        # The usual state on a host being set up: the driver is what Nova
        # will run, which is what this check proves.
        details += '; ' + _('no nova-compute process reading %s on this '
                            'host (it runs this driver from its next '
                            'start)') % target.nova_conf
    return _success(details)


def nova_conf_file(nova_conf_path: Path) -> Result:
    text = read_text(nova_conf_path, 'nova.conf')
    driver = nova_conf.current_driver(str(nova_conf_path), text)
    if driver != nova_conf.XLOUD_DRIVER:
        return _failure(_('%(path)s: compute_driver = %(driver)s (run: '
                          'xloud-nova-ext install --role compute)') % {
            'path': nova_conf_path, 'driver': driver})
    record = EditRecord.load(nova_conf_path)
    details = _record_details(nova_conf_path)
    if record is not None:
        details += ', ' + _('previous compute_driver = %s') % (
            record.details.get('previous_compute_driver'))
    return _success(details)


def nova_configuration(target: Target) -> Result:
    read_text(target.nova_conf, 'nova.conf')
    nova_env.load_nova(target.nova_conf, target.config_dir)
    source = str(target.nova_conf)
    if target.config_dir is not None:
        source += f' + {target.config_dir}/*.conf'
    return _success(_('parsed by Nova: %s') % source)


def checks_for(target: Target) -> list[tuple[str, Check]]:
    """Every check that applies to ``target``'s roles, in order."""
    named: list[tuple[str, Check]] = [
        (_('nova version'), nova_version),
        (_('package'), package),
        # Nova's CONF must be parsed before the policy, paste and driver
        # checks read it.
        (_('nova configuration'), lambda: nova_configuration(target))]
    if 'api' in target.roles:
        api_paste = target.api_paste
        named += [
            (_('api-paste.ini'), lambda: api_paste_file(api_paste)),
            (_('extra spec validators'), extra_spec_validators),
            (_('policy rules'), policy_rules),
            (_('paste filter loaded'), lambda: paste_filter(api_paste)),
            (_('api answers'), lambda: api_answer(target.session_adapter)),
            (_('compute hosts (API)'),
             lambda: compute_hosts_via_api(target.session_adapter)),
        ]
    if 'compute' in target.roles:
        named += [
            (_('nova.conf'), lambda: nova_conf_file(target.nova_conf)),
            (_('compute driver'), lambda: compute_driver(target)),
        ]
    return named


class VerifyCommands(upgradecheck.UpgradeCommands):
    """The checks as oslo.upgradecheck runs them: its table, its codes.

    ``results`` holds each check's name and result once a run is over, for
    the summary on stderr and the JSON form.
    """

    def __init__(self, named_checks: Sequence[tuple[str, Check]]) -> None:
        super().__init__()
        self.results: list[tuple[str, Result]] = []
        self._upgrade_checks = tuple(
            (name, self._recorded(name, check))
            for name, check in named_checks)

    def _recorded(self, name: str, check: Check
                  ) -> Callable[['VerifyCommands'], Result]:
        def run(commands: 'VerifyCommands') -> Result:
            result = guarded(check)
            commands.results.append((name, result))
            return result
        return run

    def check(self) -> Code:
        """Run every check and print oslo.upgradecheck's table."""
        self.results = []
        return super().check()

    def check_json(self) -> Code:
        """Run every check and print the results as JSON."""
        self.results = []
        for _name, run in self._upgrade_checks:
            run(self)
        print(json.dumps(self.as_dict(), indent=2))
        return self.code()

    def code(self) -> Code:
        """The highest code of the last run, as ``check`` returns it."""
        return max((result.code for _name, result in self.results),
                   default=Code.SUCCESS)

    def as_dict(self) -> dict:
        # The result is the code's English name rather than oslo's
        # translated word, so automation reads the same in every locale;
        # str() turns lazily translated messages into text for json.
        return {'name': str(self.display_title),
                'checks': [{'check': str(name),
                            'result': result.code.name.capitalize(),
                            'details': None if result.details is None
                            else str(result.details)}
                           for name, result in self.results]}

    def named(self, code: Code) -> list[str]:
        """The checks of the last run that ended with ``code``."""
        return [str(name) for name, result in self.results
                if result.code == code]
