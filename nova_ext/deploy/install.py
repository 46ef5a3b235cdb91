"""Install and uninstall the extension's configuration, one role at a time.

``api``: the paste filter in ``api-paste.ini``. ``compute``:
``compute_driver = xloud.XloudLibvirtDriver`` in ``nova.conf``. Each step
checks everything it relies on before it writes, so a refusal leaves every
file as it was; installing what is already installed changes nothing.
"""

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path

from nova_ext.deploy import files, nova_conf, nova_env, paste_ini
from nova_ext.deploy.files import Refused


@dataclasses.dataclass
class Outcome:
    role: str
    changed: bool
    message: str


def _require_importable(target: str, why: str) -> object:
    from nova import objects

    # Nova's services register their objects before loading plugins.
    objects.register_all()
    module, _, attribute = target.partition(':')
    try:
        loaded = importlib.import_module(module)
        return getattr(loaded, attribute) if attribute else loaded
    except Exception as exc:
        raise Refused(f'cannot import {target} with this Python ({why}): '
                      f'{type(exc).__name__}: {exc}. Install the package '
                      f'first: pip install "xloud-elastic[nova]"') from None


def install_api(api_paste: Path, progress: Callable[[str], None],
                apply: bool = True) -> Outcome:
    """With ``apply=False`` only checks, so that several roles can all be
    checked before any of them writes."""
    nova_env.require_supported_nova()
    text = files.read_text(api_paste, 'api-paste.ini')
    if paste_ini.state(str(api_paste), text) == 'installed':
        return Outcome('api', False,
                       f'{api_paste}: the {paste_ini.FILTER_NAME} filter '
                       f'is already in place; nothing changed')
    new_text = paste_ini.add_filter(str(api_paste), text)
    files.check_can_edit(api_paste)
    # Last, as it is the slow check: it loads Nova's API code.
    _require_importable(paste_ini.FILTER_FACTORY,
                        'the paste filter Nova will load')
    if not apply:
        return Outcome('api', True, f'{api_paste}: would add the filter')
    progress(f'backing up {api_paste} and adding the '
             f'{paste_ini.FILTER_NAME} filter after {paste_ini.AFTER}')
    record = files.apply_edit(api_paste, new_text,
                              {'filter': paste_ini.FILTER_NAME})
    return Outcome('api', True,
                   f'{api_paste}: {paste_ini.FILTER_NAME} added to the '
                   f'v2.1 pipeline (backup {record.backup}); restart '
                   f'nova-api to load it')


def install_compute(nova_conf_path: Path, progress: Callable[[str], None],
                    apply: bool = True) -> Outcome:
    nova_env.require_supported_nova()
    text = files.read_text(nova_conf_path, 'nova.conf')
    current = nova_conf.current_driver(str(nova_conf_path), text)
    if current == nova_conf.XLOUD_DRIVER:
        return Outcome('compute', False,
                       f'{nova_conf_path}: compute_driver is already '
                       f'{nova_conf.XLOUD_DRIVER}; nothing changed')
    if current is not None and current not in nova_conf.REPLACEABLE:
        raise Refused(f'{nova_conf_path}: compute_driver = {current}; the '
                      f'elastic driver extends libvirt.LibvirtDriver only')
    files.check_can_edit(nova_conf_path)
    _require_driver()
    if not apply:
        return Outcome('compute', True,
                       f'{nova_conf_path}: would set compute_driver')
    progress(f'backing up {nova_conf_path} and setting compute_driver = '
             f'{nova_conf.XLOUD_DRIVER} (was {current})')
    record = files.apply_edit(
        nova_conf_path,
        nova_conf.set_driver(str(nova_conf_path), text,
                             nova_conf.XLOUD_DRIVER),
        {'previous_compute_driver': current})
    return Outcome('compute', True,
                   f'{nova_conf_path}: compute_driver = '
                   f'{nova_conf.XLOUD_DRIVER} (was {current}; backup '
                   f'{record.backup}); restart nova-compute to use it')


def _require_driver() -> None:
    """The driver Nova will import for compute_driver, from this Python."""
    from nova.virt.libvirt import driver as libvirt_driver

    module = _require_importable('nova.virt.xloud',
                                 'the driver module Nova will import')
    driver_class = getattr(module, 'XloudLibvirtDriver', None)
    if not (isinstance(driver_class, type)
            and issubclass(driver_class, libvirt_driver.LibvirtDriver)):
        raise Refused('nova.virt.xloud.XloudLibvirtDriver is not a '
                      'LibvirtDriver; reinstall xloud-elastic')


def uninstall_api(api_paste: Path,
                  progress: Callable[[str], None]) -> Outcome:
    progress(f'removing the {paste_ini.FILTER_NAME} filter from '
             f'{api_paste}')
    result = files.undo_edit(api_paste, paste_ini.is_installed,
                             paste_ini.remove_filter)
    return Outcome('api', result.action != 'absent', result.message)


def uninstall_compute(nova_conf_path: Path,
                      progress: Callable[[str], None]) -> Outcome:
    progress(f'restoring compute_driver in {nova_conf_path}')
    result = files.undo_edit(nova_conf_path, nova_conf.is_installed,
                             nova_conf.restore_driver)
    return Outcome('compute', result.action != 'absent', result.message)
