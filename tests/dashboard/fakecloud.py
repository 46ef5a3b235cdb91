"""A small in-memory Nova that speaks the parts of the API the panel uses.

``FakeCloud`` keeps state (flavors, servers with their elastic size,
instance actions) and answers HTTP-shaped calls with the contract of
``doc/design.md``; ``FakeNovaServer`` serves it over HTTP on loopback so
the real ``xloud_dashboard.api`` code (openstacksdk, keystoneauth) talks to
it. Adjustments stay ``adjusting`` until ``settle()`` runs, so tests see
rows refresh themselves; ``fail_next_adjust`` makes the compute side fail.
``add_drift`` makes the audit (``GET /os-xloud-audit``, ``doc/audit.md``)
report a finding; its answers are checked against the extension's own
response schema (``test_api``). The browser tests, the API tests and the
benchmark all use it.
"""

from __future__ import annotations

import dataclasses
import datetime
import http.server
import json
import threading
import urllib.parse
import uuid
from typing import Any

ADMIN_PROJECT = 'admin-project'
ADJUST_ACTION = 'xloud-adjust'
ADJUST_EVENT = 'compute_xloud_adjust'
# The compute keeps the change records of the newest 20 adjustments.
CHANGE_HISTORY_LIMIT = 20


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_FAULT_NAMES = {400: 'badRequest', 401: 'unauthorized', 403: 'forbidden',
                404: 'itemNotFound', 409: 'conflictingRequest'}

# What the audit says of each kind (nova_ext.audit has the full sentences).
AUDIT_SEVERITIES = {
    'placement_below_live': 'critical', 'allocation_missing': 'critical',
    'placement_above_live': 'warning', 'record_live_differs': 'warning',
    'record_boot_differs': 'warning', 'domain_missing': 'warning',
    'adjustment_stuck': 'warning', 'host_unreachable': 'warning',
}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime(
        '%Y-%m-%dT%H:%M:%S.%f')


@dataclasses.dataclass
class FakeFlavor:
    id: str
    name: str
    vcpus: int
    memory_mb: int
    extra_specs: dict[str, str] = dataclasses.field(default_factory=dict)

    def minimum(self, key: str) -> int | None:
        raw = self.extra_specs.get(key)
        return int(raw) if raw is not None else None

    def as_nova(self) -> dict[str, Any]:
        return {'id': self.id, 'name': self.name, 'vcpus': self.vcpus,
                'ram': self.memory_mb, 'disk': 1,
                'os-flavor-access:is_public': True,
                'extra_specs': dict(self.extra_specs)}


@dataclasses.dataclass
class FakeServer:
    id: str
    name: str
    project_id: str
    host: str
    flavor: FakeFlavor
    vcpus: int
    memory_mb: int
    status: str = 'ACTIVE'
    updated_at: str | None = None
    adjustment_status: str | None = None
    request_id: str | None = None
    error: str | None = None
    pending: tuple[int, int] | None = None
    persist: bool = True
    locked: bool = False
    actions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # The single GET's ``changes``, newest first.
    changes: list[dict[str, str]] = dataclasses.field(default_factory=list)


class FakeCloud:
    """State plus the request handlers of the fake Nova."""

    def __init__(self) -> None:
        self.flavors: dict[str, FakeFlavor] = {}
        self.servers: dict[str, FakeServer] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_next_adjust: str | None = None
        self.extension_offered = True
        # False: an extension older than the audit (404); a status: the
        # audit's policy refuses the caller (403) or nova-api fails.
        self.audit_offered = True
        self.audit_error: int | None = None
        # server id -> the findings the audit reports, and the instances
        # it skips with why.
        self.drift: dict[str, list[dict[str, Any]]] = {}
        self.audit_skipped: dict[str, str] = {}
        # When set, each POST waits for this many concurrent POSTs: a
        # client that sends them one after another never gets through.
        self.adjust_barrier: threading.Barrier | None = None
        self._lock = threading.RLock()

    def add_flavor(self, name: str, vcpus: int, memory_mb: int, *,
                   minimum_cpu: int | None = None,
                   minimum_memory: int | None = None,
                   flavor_id: str | None = None) -> FakeFlavor:
        specs = {}
        if minimum_cpu is not None:
            specs['minimum_cpu'] = str(minimum_cpu)
        if minimum_memory is not None:
            specs['minimum_memory'] = str(minimum_memory)
        flavor = FakeFlavor(flavor_id or str(len(self.flavors) + 1), name,
                            vcpus, memory_mb, specs)
        self.flavors[flavor.id] = flavor
        return flavor

    def add_server(self, name: str, flavor: FakeFlavor, *,
                   project_id: str = ADMIN_PROJECT, host: str = 'compute-1',
                   server_id: str | None = None) -> FakeServer:
        server = FakeServer(
            id=server_id or str(uuid.uuid4()), name=name,
            project_id=project_id, host=host, flavor=flavor,
            vcpus=flavor.minimum('minimum_cpu') or flavor.vcpus,
            memory_mb=flavor.minimum('minimum_memory') or flavor.memory_mb)
        self.servers[server.id] = server
        return server

    @classmethod
    def demo(cls, servers: int = 6) -> FakeCloud:
        cloud = cls()
        small = cloud.add_flavor('elastic.small', 4, 4096, minimum_cpu=1,
                                 minimum_memory=1024, flavor_id='10')
        large = cloud.add_flavor('elastic.large', 8, 16384, minimum_cpu=2,
                                 minimum_memory=4096, flavor_id='11')
        cloud.add_flavor('m1.tiny', 1, 512, flavor_id='1')
        for index in range(servers):
            cloud.add_server(f'vm-{index:04d}', small if index % 3 else large,
                             host=f'compute-{index % 2 + 1}',
                             project_id=('demo-project' if index % 2
                                         else ADMIN_PROJECT),
                             server_id=f'00000000-0000-4000-8000-{index:012d}')
        return cloud

    def add_drift(self, server_id: str, kind: str,
                  message: str | None = None, **observed: Any) -> None:
        """Make the audit report a finding of ``kind`` for the server."""
        server = self.servers[server_id]
        self.drift.setdefault(server_id, []).append({
            'server_id': server_id, 'host': server.host, 'kind': kind,
            'severity': AUDIT_SEVERITIES[kind],
            'message': message or f'{kind} on {server.host}',
            'observed': observed})

    def settle(self) -> None:
        """Finish every adjustment in flight, as the compute would."""
        with self._lock:
            for server in self.servers.values():
                if server.adjustment_status != 'adjusting':
                    continue
                action = server.actions[0]
                event = action['events'][0]
                event['finish_time'] = _now()
                # As Nova: event details only for a failure; what changed
                # goes to the instance's change records.
                if server.error:
                    server.adjustment_status = 'error'
                    event['result'] = 'Error'
                    event['details'] = server.error
                    details = f'failed, nothing applied: {server.error}'
                else:
                    old = (server.vcpus, server.memory_mb)
                    server.vcpus, server.memory_mb = server.pending
                    server.adjustment_status = 'success'
                    server.updated_at = _now()
                    event['result'] = 'Success'
                    details = ', '.join(
                        f'{key} {before} -> {after}' for key, before, after
                        in (('vcpus', old[0], server.vcpus),
                            ('memory_mb', old[1], server.memory_mb))
                        if before != after) or 'no change'
                    details += (', persisted' if server.persist
                                else ', not persisted')
                server.changes.insert(0, {
                    'request_id': action['request_id'],
                    'changed_at': _now() + 'Z', 'details': details[:255]})
                del server.changes[CHANGE_HISTORY_LIMIT:]
                server.pending = None

    def size(self, server: FakeServer, source: str) -> dict[str, Any]:
        flavor = server.flavor
        minimum_cpu = flavor.minimum('minimum_cpu')
        minimum_memory = flavor.minimum('minimum_memory')
        return {
            'id': server.id, 'name': server.name,
            'project_id': server.project_id, 'host': server.host,
            'status': server.status,
            'flavor': {'id': flavor.id, 'name': flavor.name,
                       'vcpus': flavor.vcpus, 'memory_mb': flavor.memory_mb,
                       'minimum_cpu': minimum_cpu,
                       'minimum_memory': minimum_memory},
            'current_vcpus': server.vcpus,
            'current_memory_mb': server.memory_mb,
            'max_vcpus': flavor.vcpus, 'max_memory_mb': flavor.memory_mb,
            'min_vcpus': minimum_cpu or 1,
            'min_memory_mb': minimum_memory or 1,
            'boot_vcpus': minimum_cpu or flavor.vcpus,
            'boot_memory_mb': minimum_memory or flavor.memory_mb,
            'source': source, 'updated_at': server.updated_at,
            'not_adjustable': {'vcpus': None, 'memory_mb': None},
            'adjustment': {'status': server.adjustment_status,
                           'request_id': server.request_id,
                           'error': server.error},
        }

    def handle(self, method: str, path: str, query: dict[str, str],
               body: Any) -> tuple[int, Any]:
        """Answer one call; raises ``HTTPError`` for Nova's error answers."""
        if method == 'POST' and self.adjust_barrier is not None:
            try:
                self.adjust_barrier.wait()
            except threading.BrokenBarrierError:
                raise HTTPError(409, 'Adjustments arrived one at a time.')
        with self._lock:
            self.calls.append((method, path))
            parts = [part for part in path.split('/') if part]
            if parts[:1] == ['v2.1']:
                parts = parts[1:]
            route = (method, *parts)
            if parts and parts[0] == 'os-xloud-adjust':
                if not self.extension_offered:
                    raise HTTPError(404, 'The resource could not be found.')
                if route == ('GET', 'os-xloud-adjust'):
                    return 200, self._list_sizes(query)
                if len(parts) == 2 and method == 'GET':
                    server = self._server(parts[1])
                    size = self.size(server, 'live')
                    size['changes'] = [dict(change)
                                       for change in server.changes]
                    return 200, {'server': size}
                if len(parts) == 2 and method == 'POST':
                    return 202, self._adjust(self._server(parts[1]), body)
            if parts and parts[0] == 'os-xloud-audit':
                if not (self.extension_offered and self.audit_offered):
                    raise HTTPError(404, 'The resource could not be found.')
                if self.audit_error is not None:
                    raise HTTPError(self.audit_error, {
                        403: "Policy doesn't allow xloud:elastic_sizing:"
                             "audit to be performed.",
                    }.get(self.audit_error, 'Unexpected API Error.'))
                if route == ('GET', 'os-xloud-audit'):
                    return 200, self._audit(query)
            if route == ('GET', 'flavors', 'detail'):
                return 200, {'flavors': [flavor.as_nova() for flavor
                                         in self.flavors.values()]}
            if len(parts) == 2 and route[:2] == ('GET', 'flavors'):
                return 200, {'flavor': self._flavor(parts[1]).as_nova()}
            if len(parts) == 3 and parts[2] == 'os-extra_specs' and \
                    method == 'POST':
                flavor = self._flavor(parts[1])
                flavor.extra_specs.update(body['extra_specs'])
                return 200, {'extra_specs': dict(flavor.extra_specs)}
            if len(parts) == 4 and parts[2] == 'os-extra_specs' and \
                    method == 'DELETE':
                flavor = self._flavor(parts[1])
                if parts[3] not in flavor.extra_specs:
                    raise HTTPError(404, f'Flavor {flavor.id} has no extra '
                                         f'spec {parts[3]}.')
                del flavor.extra_specs[parts[3]]
                return 200, None
            if len(parts) >= 3 and parts[0] == 'servers' and \
                    parts[2] == 'os-instance-actions' and method == 'GET':
                server = self._server(parts[1])
                if len(parts) == 3:
                    return 200, {'instanceActions': [
                        {key: value for key, value in action.items()
                         if key != 'events'} for action in server.actions]}
                for action in server.actions:
                    if action['request_id'] == parts[3]:
                        return 200, {'instanceAction': action}
                raise HTTPError(404, f'Action {parts[3]} not found')
            raise HTTPError(404, f'No fake route for {method} {path}')

    def _server(self, server_id: str) -> FakeServer:
        try:
            return self.servers[server_id]
        except KeyError:
            raise HTTPError(404, f'Instance {server_id} could not be found.')

    def _flavor(self, flavor_id: str) -> FakeFlavor:
        try:
            return self.flavors[flavor_id]
        except KeyError:
            raise HTTPError(404, f'Flavor {flavor_id} could not be found.')

    def _list_sizes(self, query: dict[str, str]) -> dict[str, Any]:
        servers = sorted(self.servers.values(), key=lambda s: s.name)
        for key, attribute in (('host', 'host'), ('project_id', 'project_id'),
                               ('name', 'name')):
            if query.get(key):
                servers = [server for server in servers
                           if query[key] in getattr(server, attribute)]
        if query.get('flavor'):
            servers = [server for server in servers
                       if server.flavor.id == query['flavor']]
        if query.get('marker'):
            ids = [server.id for server in servers]
            if query['marker'] not in ids:
                raise HTTPError(400, f"marker [{query['marker']}] not found")
            servers = servers[ids.index(query['marker']) + 1:]
        limit = int(query.get('limit', 1000))
        page = servers[:limit]
        links = []
        if len(servers) > limit:
            links.append({'rel': 'next',
                          'href': f'/os-xloud-adjust?marker={page[-1].id}'})
        return {'servers': [self.size(server, 'recorded') for server in page],
                'servers_links': links}

    def _audit(self, query: dict[str, Any]) -> dict[str, Any]:
        """The report of an audit without fix, as nova_ext.audit builds
        it: elastic servers only, hosts in order, findings per server."""
        wanted = query.get('server_id')
        if isinstance(wanted, str):
            wanted = [wanted]
        servers = [server for server in self.servers.values()
                   if (server.flavor.minimum('minimum_cpu') is not None or
                       server.flavor.minimum('minimum_memory') is not None)
                   and (wanted is None or server.id in wanted)
                   and (not query.get('host') or
                        server.host == query['host'])]
        servers.sort(key=lambda server: (server.host, server.id))
        findings = [finding for server in servers
                    for finding in self.drift.get(server.id, [])]
        skipped = [{'server_id': server.id, 'host': server.host,
                    'reason': self.audit_skipped[server.id]}
                   for server in servers if server.id in self.audit_skipped]
        unreachable = {finding['host'] for finding in findings
                       if finding['kind'] == 'host_unreachable'}

        def status(server: FakeServer) -> str:
            kinds = {finding['kind']
                     for finding in self.drift.get(server.id, [])}
            if kinds - {'host_unreachable'}:
                return 'drift'
            if kinds or server.id in self.audit_skipped:
                return 'unknown'
            return 'in_sync'

        hosts = []
        for host in sorted({server.host for server in servers}):
            on_host = [server for server in servers if server.host == host]
            hosts.append({
                'host': host, 'instances': len(on_host),
                'checked': 0 if host in unreachable else len(
                    [server for server in on_host
                     if server.id not in self.audit_skipped]),
                'error': (f'nova-compute on {host} is down'
                          if host in unreachable else None)})
        errors = [entry['error'] for entry in hosts if entry['error']]
        return {'audit': {
            'status': ('error' if errors else 'drift' if findings
                       else 'in_sync'),
            'host': query.get('host'), 'fix': False,
            'checked': sum(entry['checked'] for entry in hosts),
            'hosts': hosts,
            'servers': [{'server_id': server.id, 'host': server.host,
                         'status': status(server)} for server in servers],
            'findings': findings, 'remaining': [dict(finding)
                                                for finding in findings],
            'healed': [], 'skipped': skipped, 'errors': errors,
        }}

    def _adjust(self, server: FakeServer, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not (
                {'current_vcpus', 'current_memory_mb'} & body.keys()):
            raise HTTPError(400, 'At least one of current_vcpus and '
                                 'current_memory_mb is required.')
        if server.locked:
            raise HTTPError(409, f'Instance {server.id} is locked.')
        if server.adjustment_status == 'adjusting':
            raise HTTPError(409, f'Instance {server.id} is being adjusted.')
        size = self.size(server, 'live')
        vcpus = body.get('current_vcpus', server.vcpus)
        memory_mb = body.get('current_memory_mb', server.memory_mb)
        if not size['min_vcpus'] <= vcpus <= size['max_vcpus']:
            raise HTTPError(400, f"current_vcpus {vcpus} is outside "
                                 f"[{size['min_vcpus']}, "
                                 f"{size['max_vcpus']}].")
        if not size['min_memory_mb'] <= memory_mb <= size['max_memory_mb']:
            raise HTTPError(400, f"current_memory_mb {memory_mb} is outside "
                                 f"[{size['min_memory_mb']}, "
                                 f"{size['max_memory_mb']}].")
        request_id = f'req-{uuid.uuid4()}'
        server.adjustment_status = 'adjusting'
        server.request_id = request_id
        server.error = self.fail_next_adjust
        self.fail_next_adjust = None
        server.pending = (vcpus, memory_mb)
        server.persist = body.get('persist', True)
        server.actions.insert(0, {
            'action': ADJUST_ACTION, 'instance_uuid': server.id,
            'request_id': request_id, 'user_id': 'admin-user',
            'project_id': ADMIN_PROJECT, 'start_time': _now(),
            'updated_at': _now(), 'message': None,
            'events': [{'event': ADJUST_EVENT, 'start_time': _now(),
                        'finish_time': None, 'result': None,
                        'host': server.host, 'details': None}]})
        return {'adjustment': {
            'server_id': server.id, 'request_id': request_id,
            'current_vcpus': vcpus, 'current_memory_mb': memory_mb,
            'persist': body.get('persist', True), 'action': ADJUST_ACTION}}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        payload = b'' if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(payload)))
        self.send_header('OpenStack-API-Version', 'compute 2.1')
        self.end_headers()
        self.wfile.write(payload)

    def _dispatch(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        # One value per key; a repeated key (server_id=a&server_id=b)
        # becomes the list of its values.
        query: dict[str, Any] = {}
        for key, value in urllib.parse.parse_qsl(url.query):
            if key in query:
                previous = query[key]
                query[key] = [*(previous if isinstance(previous, list)
                                else [previous]), value]
            else:
                query[key] = value
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        if not self.headers.get('X-Auth-Token'):
            self._answer(401, {'error': {'message': 'No token', 'code': 401}})
            return
        try:
            body = json.loads(raw) if raw else None
            status, answer = self.server.fake.cloud.handle(
                self.command, url.path, query, body)
        except HTTPError as exc:
            fault = _FAULT_NAMES.get(exc.status, 'computeFault')
            self._answer(exc.status, {fault: {'message': exc.message,
                                              'code': exc.status}})
            return
        self._answer(status, answer)

    do_GET = do_POST = do_DELETE = do_PUT = _dispatch


class FakeNovaServer:
    """Serves a ``FakeCloud`` on a free loopback port, in a thread.

    ``cloud`` may be replaced between tests to start from a fresh state.
    """

    def __init__(self, cloud: FakeCloud) -> None:
        self.cloud = cloud
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                                     _Handler)
        self.httpd.fake = self
        self.httpd.daemon_threads = True
        self.url = f'http://127.0.0.1:{self.httpd.server_port}/v2.1'
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        daemon=True)

    def __enter__(self) -> FakeNovaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()
