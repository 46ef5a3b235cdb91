"""A throwaway Nova 34 install, shared by the whole deploy suite.

A real ``pip install nova`` resolves ~150 dependencies and takes minutes,
which the 4-minute budget of this suite cannot afford, and CI has no Nova
wheel in a cache. So the suite builds the Nova install the way pip would
from the wheel, but from what is already here:

* the ``nova`` distribution of the running interpreter is packed back into
  a wheel from its own RECORD (``nova/`` plus ``etc/nova/`` as wheel data,
  byte for byte what the PyPI wheel installed) and ``pip install
  --no-deps``-ed into a fresh virtualenv, so the venv has a genuine,
  pip-managed Nova 34 with its sample ``api-paste.ini`` under
  ``<venv>/etc/nova`` and its own metadata and console scripts;
* this project is built into a wheel by setuptools from the work tree and
  pip-installed the same way, exactly what an operator's
  ``pip install xloud-elastic`` puts in place (``nova_ext``, the
  ``nova/virt/xloud`` shim, the entry points);
* Nova's dependencies come from the shared virtualenv through a ``.pth``
  file that points at a directory of links to its site-packages, leaving
  out ``nova``, this project and their metadata, so only the throwaway
  copies of those are importable in the venv.

One venv serves every test (a few seconds to build); tests that change it
put it back. ``nova.conf`` is Nova's generated sample
(``oslo-config-generator --namespace nova.conf``), written per test.
"""

import base64
import csv
import hashlib
import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ('setup.cfg', 'pyproject.toml', 'README.md', 'nova_ext',
           'xloud_dashboard', 'nova/virt/xloud')
# Left out of the shared dependencies so that only the throwaway copies
# of Nova and of this project are importable in the venv.
OWN_TOP_LEVEL = ('nova', 'nova_ext', 'xloud_dashboard')
OWN_DISTRIBUTIONS = ('nova-', 'xloud_elastic-', '__editable__')


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
    return 'sha256=' + digest.rstrip(b'=').decode()


def repack_nova_wheel(directory: Path) -> Path:
    """Pack the installed ``nova`` distribution back into a wheel."""
    dist = importlib.metadata.distribution('nova')
    name = f'nova-{dist.version}'
    wheel = directory / f'{name}-py3-none-any.whl'
    rows = []
    with zipfile.ZipFile(wheel, 'w', zipfile.ZIP_STORED) as archive:
        for entry in dist.files:
            path = str(entry)
            if '__pycache__' in path or path.endswith(
                    ('/INSTALLER', '/REQUESTED', '/RECORD',
                     '/direct_url.json')):
                continue
            if path.startswith('../'):
                # Data files such as ../../../etc/nova/api-paste.ini;
                # console scripts are regenerated from entry_points.txt.
                relative = path.lstrip('./')
                if not relative.startswith('etc/'):
                    continue
                arcname = f'{name}.data/data/{relative}'
            else:
                arcname = path
            data = Path(entry.locate()).read_bytes()
            archive.writestr(arcname, data)
            rows.append((arcname, _record_hash(data), len(data)))
        record = io.StringIO()
        writer = csv.writer(record, lineterminator='\n')
        writer.writerows(rows)
        writer.writerow((f'{name}.dist-info/RECORD', '', ''))
        archive.writestr(f'{name}.dist-info/RECORD', record.getvalue())
    return wheel


def build_project_wheel(directory: Path) -> Path:
    source = directory / 'source'
    for item in SOURCES:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, source / item, ignore=shutil.ignore_patterns(
                '__pycache__'))
        else:
            (source / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, source / item)
    subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
         '--no-build-isolation', '--no-index', '-w', str(directory),
         str(source)], check=True)
    return next(directory.glob('xloud_elastic-*.whl'))


def _shared_dependencies(directory: Path) -> Path:
    purelib = Path(importlib.metadata.distribution('nova').locate_file(''))
    links = directory / 'shared-deps'
    links.mkdir()
    for entry in purelib.iterdir():
        if entry.name in OWN_TOP_LEVEL or entry.name.startswith(
                OWN_DISTRIBUTIONS) or entry.suffix == '.pth':
            continue
        (links / entry.name).symlink_to(entry)
    return links


class NovaVenv:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = root / 'bin' / 'python'
        self.tool = root / 'bin' / 'xloud-nova-ext'
        self.etc = root / 'etc' / 'nova'
        self.api_paste = self.etc / 'api-paste.ini'
        self.purelib = Path(subprocess.check_output(
            [self.python, '-c',
             'import sysconfig; print(sysconfig.get_path("purelib"))'],
            text=True).strip())

    def pip(self, *args: str) -> None:
        subprocess.run([sys.executable, '-m', 'pip', '--python',
                        str(self.python), '-q', *args], check=True,
                       env={**os.environ, 'PIP_NO_INDEX': '1'})

    def run(self, *args: str, check: bool = False, env=None):
        """Run the installed ``xloud-nova-ext`` of this venv."""
        return subprocess.run(
            [str(self.tool), *args], capture_output=True, text=True,
            check=check, timeout=180, cwd=self.root,
            env={**os.environ, **(env or {})})

    def nova_metadata(self) -> Path:
        return next(self.purelib.glob('nova-*.dist-info')) / 'METADATA'

    def nova_tree_digest(self) -> dict[str, str]:
        """Checksums of every file of the Nova install, as pip would see
        them (no bytecode)."""
        digest = {}
        for base in (self.purelib / 'nova', self.etc):
            for path in sorted(base.rglob('*')):
                if path.is_file() and '__pycache__' not in path.parts:
                    digest[str(path.relative_to(self.root))] = \
                        hashlib.sha256(path.read_bytes()).hexdigest()
        return digest


@pytest.fixture(scope='session')
def wheels(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp('wheels')
    return {'nova': repack_nova_wheel(directory),
            'project': build_project_wheel(directory)}


def make_nova_venv(directory: Path, wheels: dict[str, Path],
                   with_project: bool) -> NovaVenv:
    """A venv with Nova 34 installed, and this project on top if asked."""
    root = directory / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip',
                    str(root)], check=True)
    venv = NovaVenv(root)
    (venv.purelib / 'shared-deps.pth').write_text(
        f'{_shared_dependencies(directory)}\n')
    venv.pip('install', '--no-deps', '--no-compile', str(wheels['nova']))
    venv.nova_only_digest = venv.nova_tree_digest()
    venv.project_wheel = wheels['project']
    if with_project:
        venv.pip('install', '--no-deps', '--no-compile',
                 str(wheels['project']))
    return venv


@pytest.fixture(scope='session')
def nova_venv(tmp_path_factory, wheels) -> NovaVenv:
    return make_nova_venv(tmp_path_factory.mktemp('nova-venv'), wheels,
                          with_project=True)


@pytest.fixture(scope='session')
def sample_nova_conf(nova_venv, tmp_path_factory) -> str:
    """Nova's generated sample nova.conf (every option commented out)."""
    path = tmp_path_factory.mktemp('sample') / 'nova.conf.sample'
    subprocess.run(
        [str(nova_venv.python), '-m', 'oslo_config.generator',
         '--namespace', 'nova.conf', '--output-file', str(path)],
        check=True, capture_output=True, timeout=180, cwd=nova_venv.root)
    return path.read_text()
