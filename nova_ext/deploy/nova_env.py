"""The Nova this tool runs against: its version and its configuration."""

import importlib.metadata
from pathlib import Path

from packaging.version import InvalidVersion, Version

from nova_ext import SUPPORTED_NOVA
from nova_ext.deploy.files import Refused

DEFAULT_NOVA_CONF = Path('/etc/nova/nova.conf')
DEFAULT_API_PASTE = Path('/etc/nova/api-paste.ini')


def installed_nova_version() -> str:
    try:
        return importlib.metadata.version('nova')
    except importlib.metadata.PackageNotFoundError:
        raise Refused('Nova is not installed in this Python environment '
                      '(run the tool with the Python that runs Nova, e.g. '
                      'inside the nova_api / nova_compute container)') \
            from None


def supported_range() -> str:
    low, high = SUPPORTED_NOVA
    return f'>={low},<{high}'


def is_supported(version: str) -> bool:
    low, high = (Version(v) for v in SUPPORTED_NOVA)
    try:
        return low <= Version(version) < high
    except InvalidVersion:
        return False


def require_supported_nova() -> str:
    version = installed_nova_version()
    if not is_supported(version):
        raise Refused(f'Nova {version} is outside the supported range '
                      f'{supported_range()}: this extension subclasses '
                      f'Nova internals that change between releases. '
                      f'Install the xloud-elastic release made for Nova '
                      f'{version}')
    return version


def load_nova(nova_conf: Path, config_dir: Path | None = None):
    """Prepare Nova in this process the way its services start: objects
    registered, configuration parsed from the given files."""
    from nova import objects

    objects.register_all()
    return load_nova_config(nova_conf, config_dir)


def load_nova_config(nova_conf: Path, config_dir: Path | None = None):
    """Nova's own ``CONF``, parsed from the given files as a service would
    (so ``[DEFAULT] compute_driver``, ``[oslo_policy]`` and the paste
    settings are what Nova itself would read)."""
    import nova.conf
    from nova import config

    args = ['--config-file', str(nova_conf)]
    if config_dir is not None:
        args += ['--config-dir', str(config_dir)]
    config.parse_args(['xloud-nova-ext'] + args, default_config_files=[],
                      init_rpc=True, configure_db=False)
    return nova.conf.CONF
