"""Serve one OpenStack WSGI application on loopback with cheroot.

``python -m deploy.localcloud.wsgi_server keystone|placement|glance PORT
CONFDIR``

The applications are loaded through their projects' own WSGI entry points
(``keystone.server.wsgi``, ``placement.wsgi``, ``glance.wsgi.api``, which
calls ``glance.common.wsgi_app.init_app``), exactly as uWSGI or mod_wsgi
would load them in production; only the server differs.
"""

import os
import signal
import sys
import threading
from collections.abc import Callable

from cheroot import wsgi

from deploy.localcloud import sqlite_locking

HOST = "127.0.0.1"


def _keystone(confdir: str) -> Callable:
    os.environ["OS_KEYSTONE_CONFIG_DIR"] = confdir
    from keystone.server import wsgi as keystone_wsgi
    return keystone_wsgi.initialize_public_application()


def _placement(confdir: str) -> Callable:
    os.environ["OS_PLACEMENT_CONFIG_DIR"] = confdir
    from placement import wsgi as placement_wsgi
    return placement_wsgi.init_application()


def _glance(confdir: str) -> Callable:
    os.environ["OS_GLANCE_CONFIG_DIR"] = confdir
    from glance.common import wsgi_app as glance_wsgi
    return _input_left_open(glance_wsgi.init_app())


class _ServerOwnedInput:
    """``wsgi.input`` whose ``close()`` leaves the connection alone.

    Glance closes the request body once it has stored an image's data
    (``glance.location``); cheroot's body reader then closes the
    connection's socket file, and the next request on that keep-alive
    connection (Nova's GET right after uploading a snapshot) gets a 500.
    """

    def __init__(self, body) -> None:
        self._body = body

    def __getattr__(self, name: str):
        return getattr(self._body, name)

    def __iter__(self):
        return iter(self._body)

    def close(self) -> None:
        """The server closes the connection, not the application."""


def _input_left_open(app: Callable) -> Callable:
    def serve_request(environ, start_response):
        environ["wsgi.input"] = _ServerOwnedInput(environ["wsgi.input"])
        return app(environ, start_response)
    return serve_request


APPS: dict[str, Callable[[str], Callable]] = {
    "keystone": _keystone,
    "placement": _placement,
    "glance": _glance,
}


def serve(app: Callable, port: int, name: str) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return."""
    server = wsgi.Server((HOST, port), app, numthreads=8,
                         server_name=f"localcloud-{name}")
    # Keep-alive connections (Horizon's, the SDK's) must not hold up a stop.
    server.shutdown_timeout = 1
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.prepare()
    worker = threading.Thread(target=server.serve, daemon=True)
    worker.start()
    print(f"{name}: serving on http://{HOST}:{port}", flush=True)
    stop.wait()
    server.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in APPS:
        print(__doc__, file=sys.stderr)
        return 2
    name, port, confdir = argv[0], int(argv[1]), argv[2]
    sqlite_locking.serialize_sqlite_writers()
    # The applications parse sys.argv as their own command line.
    sys.argv = [f"localcloud-{name}"]
    serve(APPS[name](confdir), port, name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
