"""Configuration files of the local cloud's services.

Each service gets the configuration a small production deployment would
have (Keystone with fernet tokens, keystonemiddleware in front of Placement,
Glance and Nova, Nova's cells v2 layout), pointed at loopback and at the state
directory.  The extension's pieces are switched on when this checkout has
them, so the cloud also runs as plain upstream OpenStack.
"""

import configparser
import dataclasses
import importlib.util
import io
import sys
from pathlib import Path

from deploy.localcloud import layout as layout_mod
from deploy.localcloud import libvirthost
from deploy.localcloud.layout import Layout
from nova_ext import conf as extension_conf
from nova_ext.deploy import paste_ini

PASTE_FILTER = paste_ini.FILTER_NAME
PASTE_FILTER_FACTORY = paste_ini.FILTER_FACTORY
XLOUD_DRIVER = "xloud.XloudLibvirtDriver"
STOCK_DRIVER = "libvirt.LibvirtDriver"
AUTOPILOT_SECTION = extension_conf.AUTOPILOT_GROUP.name


class OptionError(ValueError):
    """An option for nova.conf that nova-compute would not take."""


def autopilot_options(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs of ``[xloud_autopilot]``, each checked as
    nova-compute reads it (``nova_ext.conf.AUTOPILOT_OPTS``: name, type,
    range, choices); OptionError names the first one that is not."""
    known = {opt.name: opt for opt in extension_conf.AUTOPILOT_OPTS}
    options: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = (part.strip() for part in pair.partition("="))
        if not equals or not key:
            raise OptionError(f"{pair!r} is not KEY=VALUE")
        opt = known.get(key)
        if opt is None:
            raise OptionError(
                f"[{AUTOPILOT_SECTION}] has no option {key!r}; it has "
                f"{', '.join(known)}")
        if key in options:
            raise OptionError(f"[{AUTOPILOT_SECTION}] {key} is given twice")
        try:
            opt.type(value)
        except ValueError as exc:
            raise OptionError(
                f"[{AUTOPILOT_SECTION}] {key} = {value!r}: {exc}") from None
        options[key] = value
    return options


@dataclasses.dataclass(frozen=True)
class Extension:
    """Which pieces of this project the checkout provides."""

    paste_filter: bool
    compute_driver: bool
    dashboard_enabled_files: tuple[Path, ...]
    # Why a piece is off: absent from the checkout, or left out on request.
    off_because: str = "not in this checkout"

    @classmethod
    def stock(cls) -> "Extension":
        """None of the pieces: Nova and Horizon as they ship, to compare."""
        return cls(paste_filter=False, compute_driver=False,
                   dashboard_enabled_files=(), off_because="off (--stock)")

    @classmethod
    def detect(cls) -> "Extension":
        def has_module(name: str) -> bool:
            try:
                return importlib.util.find_spec(name) is not None
            except ModuleNotFoundError:
                return False

        enabled = layout_mod.REPO_ROOT / "enabled"
        return cls(
            paste_filter=has_module("nova_ext.api.filter"),
            compute_driver=(has_module("nova_ext.virt.driver")
                            and has_module("nova.virt.xloud")),
            dashboard_enabled_files=tuple(sorted(
                path for path in enabled.glob("_*.py")
                if path.name != "__init__.py")),
        )

    def summary(self) -> list[str]:
        def state(on: bool) -> str:
            return "on" if on else f"{self.off_because} (stock Nova)"
        return [
            f"API extension (paste filter {PASTE_FILTER}): "
            f"{state(self.paste_filter)}",
            f"compute driver {XLOUD_DRIVER}: {state(self.compute_driver)}",
            "Horizon plugin: " + (
                ", ".join(p.name for p in self.dashboard_enabled_files)
                if self.dashboard_enabled_files
                else f"{self.off_because} (stock Horizon)"),
        ]


def _render(sections: dict[str, dict[str, object]]) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    for section, values in sections.items():
        if section != "DEFAULT":
            parser.add_section(section)
        for key, value in values.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            parser.set(section, key, str(value))
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def _authtoken(lay: Layout, user: str) -> dict[str, object]:
    return {
        "www_authenticate_uri": lay.url("keystone"),
        "auth_url": lay.url("keystone"),
        "auth_type": "password",
        "project_domain_name": "Default",
        "user_domain_name": "Default",
        "project_name": layout_mod.SERVICE_PROJECT,
        "username": user,
        "password": lay.secret(f"{user}_password"),
        "region_name": layout_mod.REGION,
    }


def keystone_conf(lay: Layout) -> str:
    base = lay.state / "keystone"
    return _render({
        "DEFAULT": {"debug": False},
        "database": {"connection": lay.database_url("keystone")},
        "token": {"provider": "fernet", "expiration": 86400},
        "fernet_tokens": {"key_repository": base / "fernet-keys"},
        "fernet_receipts": {"key_repository": base / "fernet-keys"},
        "credential": {"key_repository": base / "credential-keys"},
        # One Keystone process: its in-memory cache spares most of the
        # SQLite round trips of every token validation.
        "cache": {"enabled": True, "backend": "dogpile.cache.memory"},
        # bcrypt's default cost makes every password login take a good
        # fraction of a second of CPU; a loopback demo cloud needs no more
        # than the minimum.
        "identity": {"password_hash_rounds": 4},
    })


def placement_conf(lay: Layout) -> str:
    return _render({
        "DEFAULT": {"debug": False},
        "placement_database": {"connection": lay.database_url("placement")},
        "api": {"auth_strategy": "keystone"},
        "keystone_authtoken": _authtoken(lay, "placement"),
    })


def glance_conf(lay: Layout) -> str:
    """Glance's image API (v2, the only one it has) on the file store."""
    base = lay.state / "glance"
    return _render({
        "DEFAULT": {"debug": False, "enabled_backends": "file:file"},
        "database": {"connection": lay.database_url("glance")},
        "glance_store": {"default_backend": "file"},
        "file": {"filesystem_store_datadir": base / "images"},
        # Where image imports stage their data and tasks keep theirs;
        # Glance asks for both whenever enabled_backends is set.
        "os_glance_staging_store": {
            "filesystem_store_datadir": base / "staging"},
        "os_glance_tasks_store": {"filesystem_store_datadir": base / "tasks"},
        "paste_deploy": {
            "flavor": "keystone",
            "config_file": lay.etc / "glance" / "glance-api-paste.ini"},
        "keystone_authtoken": _authtoken(lay, "glance"),
        "oslo_concurrency": {"lock_path": base / "locks"},
    })


SCHEDULER_FILTERS = (
    "ComputeFilter", "ComputeCapabilitiesFilter", "ImagePropertiesFilter",
    "ServerGroupAntiAffinityFilter", "ServerGroupAffinityFilter",
    "AggregateInstanceExtraSpecsFilter", "NUMATopologyFilter",
    "PciPassthroughFilter", "AggregateMultiTenancyIsolation",
)


def nova_conf(lay: Layout, ext: Extension,
              xloud_options: dict[str, object] | None = None,
              virt_type: str = "kvm",
              autopilot: dict[str, object] | None = None) -> str:
    """Nova's configuration; ``xloud_options`` fill its ``[xloud]`` section
    and ``autopilot`` its ``[xloud_autopilot]`` (``nova_ext.conf``), left
    out for the extension's defaults."""
    state = lay.state / "nova"
    default: dict[str, object] = {
        "debug": False,
        "state_path": state,
        "instances_path": state / "instances",
        "transport_url": lay.transport_url(),
        "compute_driver": XLOUD_DRIVER if ext.compute_driver
        else STOCK_DRIVER,
        "my_ip": layout_mod.HOST,
        # Nova's own default is 1.0; the seeded instances boot at their
        # flavor minimum and grow, so a little overcommit keeps both
        # hosts usable for a demo.
        "initial_ram_allocation_ratio": 1.5,
        "heal_instance_info_cache_interval": -1,
    }
    if lay.mode == "mariadb":
        # One exchange per state directory: several clouds or test runs can
        # share the machine's broker without seeing each other's messages.
        default["control_exchange"] = lay.run_id()
    sections: dict[str, dict[str, object]] = {
        "DEFAULT": default,
        "wsgi": {"api_paste_config": lay.etc / "nova" / "api-paste.ini"},
        "api": {"auth_strategy": "keystone"},
        "api_database": {"connection": lay.database_url("nova_api")},
        "database": {"connection": lay.database_url("nova_cell1")},
        "keystone_authtoken": _authtoken(lay, "nova"),
        "placement": {
            "auth_type": "password",
            "auth_url": lay.url("keystone"),
            "project_domain_name": "Default",
            "user_domain_name": "Default",
            "project_name": layout_mod.SERVICE_PROJECT,
            "username": "nova",
            "password": lay.secret("nova_password"),
            "region_name": layout_mod.REGION,
            "valid_interfaces": "public",
        },
        # Glance's endpoint is read from the catalog.
        "glance": {"region_name": layout_mod.REGION,
                   "valid_interfaces": "public"},
        "oslo_concurrency": {"lock_path": state / "locks"},
        "oslo_messaging_notifications": {"driver": "noop"},
        # Hosts are mapped by the launcher right after the computes start.
        "scheduler": {"discover_hosts_in_cells_interval": -1},
        # Nova's defaults and the filters production clouds add, the
        # aggregate extra specs filter among them: it takes every
        # unscoped flavor extra spec for a host requirement.
        "filter_scheduler": {"enabled_filters": ",".join(SCHEDULER_FILTERS)},
        "quota": {"instances": 50, "cores": 200, "ram": 409600},
        # The fake libvirt offers KVM; a real host's is probed
        # (libvirthost.virt_type). The balloon driver's statistics are
        # how an adjustment reads the memory the guest can use (the
        # guest block of GET /os-xloud-adjust/{id}); at 0 Nova writes no
        # balloon device at all (model='none'). Written out, not left to
        # Nova's default, which a packaged nova.conf may set to 0.
        "libvirt": {"virt_type": virt_type,
                    "mem_stats_period_seconds": 10},
        "vnc": {"enabled": False},
    }
    if lay.hypervisor == "qemu":
        for section, values in libvirthost.nova_options(
                lay.etc / "nova", virt_type).items():
            sections.setdefault(section, {}).update(values)
    if xloud_options:
        sections.setdefault("xloud", {}).update(xloud_options)
    if autopilot:
        sections.setdefault(AUTOPILOT_SECTION, {}).update(autopilot)
    return _render(sections)


def api_paste_ini(ext: Extension) -> str:
    """Nova's own api-paste.ini, with the extension's filter when present.

    The filter is placed by the same code as ``xloud-nova-ext install
    --role api``: right after ``keystonecontext`` in the ``keystone`` key
    of the v2.1 composite, the only key ``pipeline_factory_v21`` reads.
    """
    shipped = Path(sys.prefix) / "etc" / "nova" / "api-paste.ini"
    text = shipped.read_text()
    if not ext.paste_filter:
        return text
    return paste_ini.add_filter(str(shipped), text)


def glance_api_paste_ini() -> str:
    """Glance's own pipelines; ``[paste_deploy] flavor`` picks the one with
    keystonemiddleware."""
    return (Path(sys.prefix) / "etc" / "glance"
            / "glance-api-paste.ini").read_text()


def write_all(lay: Layout, ext: Extension,
              xloud_options: dict[str, object] | None = None,
              virt_type: str = "kvm",
              autopilot: dict[str, object] | None = None) -> None:
    files = {
        lay.etc / "keystone" / "keystone.conf": keystone_conf(lay),
        lay.etc / "placement" / "placement.conf": placement_conf(lay),
        lay.etc / "nova" / "nova.conf": nova_conf(lay, ext, xloud_options,
                                                   virt_type, autopilot),
        lay.etc / "nova" / "api-paste.ini": api_paste_ini(ext),
        lay.etc / "glance" / "glance-api.conf": glance_conf(lay),
        lay.etc / "glance" / "glance-api-paste.ini": glance_api_paste_ini(),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for sub in ("db", "logs", "keystone", "nova/instances", "nova/locks",
                "glance/images", "glance/staging", "glance/tasks",
                "horizon"):
        (lay.state / sub).mkdir(parents=True, exist_ok=True)
