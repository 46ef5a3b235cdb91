"""A private, unprivileged libvirtd for the real-guest tests.

The daemon runs as ``nobody`` in libvirt's session mode, so every file it
keeps (sockets, domain definitions, capability cache, QEMU pid files and
logs) lives under one temporary directory, and the machine's own libvirt
(``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``) is never read or
written. The test process, root, reaches it through a custom socket URI.

Running unprivileged also settles ``/dev/kvm``: on every lookup libvirt
checks its cached QEMU capabilities against ``/dev/kvm`` (whether the *QEMU
user* can open it) and probes QEMU again when they disagree. ``nobody``
never can (the device is ``0600 root:root`` or ``0660 root:kvm``), so the
answer matches the probe and the capabilities are probed once per daemon;
the guests run under TCG (domain type ``qemu``), which is what this machine
kind can run.
"""

import contextlib
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import libvirt

from deploy.localcloud import supervisor

QEMU_CONF = '''# Written by tests/realguest: QEMU's stdio goes to a file, so no
# virtlogd is started on the daemon's behalf.
stdio_handler = "file"
'''

LIBVIRTD_CONF = '''log_outputs = "3:file:{log}"
'''

STATE_DIR_PREFIX = 'xloud-rg-'
OWNER_FILE = 'owner.pid'


class DaemonUnavailable(Exception):
    """The private libvirtd could not be started here."""


class PrivateLibvirtd:
    """One libvirtd process with its own state directory; a context manager.

    ``stop()`` destroys and undefines every domain the daemon knows, stops
    the daemon, ends any QEMU process it left behind (by the pid in its own
    pid files), and removes the directory.
    """

    def __init__(self, user: str = 'nobody', start_timeout: float = 60):
        # Root hands the daemon to ``user``; anyone else runs it as
        # themselves, which is libvirt's session mode all the same.
        self.user = (pwd.getpwnam(user) if os.geteuid() == 0
                     else pwd.getpwuid(os.geteuid()))
        self.start_timeout = start_timeout
        self.base: pathlib.Path | None = None
        self.process: subprocess.Popen | None = None
        self._connections: list[libvirt.virConnect] = []

    @property
    def socket_path(self) -> pathlib.Path:
        return self.base / 'run' / 'libvirt' / 'libvirt-sock'

    @property
    def uri(self) -> str:
        return f'qemu+unix:///session?socket={self.socket_path}'

    @property
    def log_path(self) -> pathlib.Path:
        return self.base / 'libvirtd.log'

    def shared_dir(self, name: str) -> pathlib.Path:
        """A directory both the test and the daemon's QEMU may write."""
        path = self.base / name
        path.mkdir(exist_ok=True)
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path

    def start(self) -> 'PrivateLibvirtd':
        binary = shutil.which('libvirtd')
        if binary is None:
            raise DaemonUnavailable('libvirtd is not installed')
        argv = [binary]
        if os.geteuid() == 0:
            setpriv = shutil.which('setpriv')
            if setpriv is None:
                raise DaemonUnavailable('setpriv (util-linux) is missing')
            argv[:0] = [setpriv, f'--reuid={self.user.pw_uid}',
                        f'--regid={self.user.pw_gid}', '--clear-groups']
        sweep_stale()
        # Short path: the socket's path must fit in sockaddr_un (108 bytes).
        self.base = pathlib.Path(tempfile.mkdtemp(prefix=STATE_DIR_PREFIX))
        (self.base / OWNER_FILE).write_text(f'{os.getpid()}\n')
        os.chmod(self.base, 0o755)
        for name in ('run', 'config/libvirt', 'cache', 'home'):
            (self.base / name).mkdir(parents=True)
        (self.base / 'config' / 'libvirt' / 'qemu.conf').write_text(QEMU_CONF)
        conf = self.base / 'config' / 'libvirt' / 'libvirtd.conf'
        conf.write_text(LIBVIRTD_CONF.format(log=self.log_path))
        for path in [self.base, *self.base.rglob('*')]:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        env = {
            'PATH': os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin'),
            'HOME': str(self.base / 'home'),
            'XDG_RUNTIME_DIR': str(self.base / 'run'),
            'XDG_CONFIG_HOME': str(self.base / 'config'),
            'XDG_CACHE_HOME': str(self.base / 'cache'),
            'LANG': 'C',
        }
        with open(self.base / 'libvirtd.out', 'wb') as output:
            self.process = subprocess.Popen(
                [*argv, '--config', str(conf)],
                env=env, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process.poll() is not None:
                output = (self.base / 'libvirtd.out').read_text()[-2000:]
                self.stop()
                raise DaemonUnavailable(
                    f'libvirtd exited with {self.process.returncode}: '
                    f'{output}')
            if self.socket_path.exists():
                with contextlib.suppress(libvirt.libvirtError):
                    libvirt.open(self.uri).close()
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise DaemonUnavailable(
                    f'libvirtd did not answer on {self.socket_path} within '
                    f'{self.start_timeout} s')
            time.sleep(0.1)

    def connect(self) -> libvirt.virConnect:
        conn = libvirt.open(self.uri)
        self._connections.append(conn)
        return conn

    def qemu_pids(self) -> list[int]:
        """Pids of the QEMU processes this daemon started and still owns."""
        return _qemu_pids(self.base) if self.base else []

    def _destroy_domains(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError:
            return
        try:
            for domain in conn.listAllDomains():
                with contextlib.suppress(libvirt.libvirtError):
                    if domain.isActive():
                        domain.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    domain.undefine()
        finally:
            conn.close()

    def stop(self) -> None:
        if self.base is None:
            return
        for conn in self._connections:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
        self._connections.clear()
        self._destroy_domains()
        # Pids read before the daemon goes: a QEMU it could not stop would
        # otherwise outlive the test.
        leftover = self.qemu_pids()
        if self.process is not None:
            supervisor.stop_process(self.process, grace=15)
        _kill_qemus(leftover)
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    def __enter__(self) -> 'PrivateLibvirtd':
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def sweep_stale() -> None:
    """Remove what a killed earlier run left: its QEMUs and directory.

    Only directories of this module whose owning test process is gone are
    touched (another run may be going on at the same time), and only QEMU
    processes listed in their own pid files.
    """
    for base in pathlib.Path(tempfile.gettempdir()).glob(
            STATE_DIR_PREFIX + '*'):
        try:
            owner = int((base / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        daemon_pidfile = base / 'run' / 'libvirt' / 'libvirtd.pid'
        with contextlib.suppress(OSError, ValueError):
            _kill_if(int(daemon_pidfile.read_text().strip()), b'libvirtd')
        _kill_qemus(_qemu_pids(base))
        shutil.rmtree(base, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _qemu_pids(base: pathlib.Path) -> list[int]:
    pids = []
    for pidfile in (base / 'run' / 'libvirt' / 'qemu' / 'run').glob('*.pid'):
        if pidfile.name == 'driver.pid':
            continue  # the QEMU driver's own lock: libvirtd's pid
        with contextlib.suppress(ValueError, OSError):
            pids.append(int(pidfile.read_text().strip()))
    return pids


def _kill_qemus(pids: list[int]) -> None:
    for pid in pids:
        _kill_if(pid, b'qemu-system')


def _kill_if(pid: int, program: bytes) -> None:
    """SIGKILL ``pid`` if it still runs ``program`` (pids are reused)."""
    try:
        argv = pathlib.Path(f'/proc/{pid}/cmdline').read_bytes()
    except OSError:
        return
    if program in argv.split(b'\0', 1)[0]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
