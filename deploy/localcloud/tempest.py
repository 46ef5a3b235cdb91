"""Tempest, OpenStack's integration suite, against a running local cloud.

``python -m deploy.localcloud tempest [--state-dir DIR] [--regex R]
[--concurrency N]``

The configuration is generated from the cloud's run file
(``<state>/cloud.json``), from what the running cloud answers (Keystone's
catalog and roles, Nova's versions, hypervisors, images and flavors) and
from the Nova options Tempest asks to mirror (``<state>/etc/nova``).
Services the cloud lacks are switched off in ``[service_available]`` and
features it cannot offer in ``[compute-feature-enabled]``, each with its
reason written next to it; the few tests Tempest has no switch for are in
``tempest-exclude.txt``.  The workspace is ``<state>/tempest/``: the
configuration in ``etc/tempest.conf``, Tempest's log in ``logs/``, stestr's
repository, and ``last-run.json``, the outcome of the last run.
"""

import configparser
import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import openstack

from deploy.localcloud import layout as layout_mod

Say = Callable[[str], None]

BIN = Path(sys.executable).parent
EXCLUDE_LIST = Path(__file__).with_name("tempest-exclude.txt")
# The compute API areas of issue 14: flavors and their extra specs,
# servers and their actions, the admin API, limits and quotas (a
# project's own quotas are tested in tempest.api.compute.test_quotas).
DEFAULT_REGEX = (r"^tempest\.api\.compute\."
                 r"(flavors|servers|admin|limits|(test_)?quotas)\.")
DEFAULT_CONCURRENCY = 2
# Seconds a server may take to reach a state, and why.  Tempest's default
# (300 s) lets every stuck server hold a worker for five minutes.
BUILD_TIMEOUT = {
    "fake": (60, "a fake guest changes state within seconds: a server "
                 "stuck in a state fails after a minute, not five"),
    "qemu": (300, "real guests, emulated on a small host, may take "
                  "minutes to boot: Tempest's default"),
}
# Tempest boots its servers from images and resizes them to the second
# flavor: both must be small (many servers run at once) and plain.
SMALL_VCPUS = 2
SMALL_RAM_MB = 2048
TEMPEST_FLAVORS = (
    ("tempest.small", 1, 256, 1),
    ("tempest.medium", 1, 512, 1),
)
# Kernel and ramdisk images are parts of a boot, not something to boot.
UNBOOTABLE_DISK_FORMATS = ("aki", "ari")
# The roles Nova's default policies name (nova/policies/base.py).
NOVA_POLICY_ROLES = ("admin", "manager", "member", "reader")


class TempestError(RuntimeError):
    """A problem the person running Tempest can fix; printed as is."""


@dataclasses.dataclass(frozen=True)
class CloudFacts:
    """What the running cloud says about itself."""

    services: frozenset[str]
    roles: frozenset[str]
    compute_max_microversion: str
    compute_nodes: int
    image_ref: str
    image_ref_alt: str
    flavor_ref: str
    flavor_ref_alt: str
    flavors_created: tuple[str, ...]


def read_run_file(state: Path) -> dict:
    """The run file of the cloud running from ``state``."""
    run_file = layout_mod.Layout(state, layout_mod.Ports()).run_file
    if not run_file.exists():
        raise TempestError(
            f"no local cloud is running from {state} ({run_file} is "
            f"missing): start one with `python -m deploy.localcloud up "
            f"--state-dir {state}` and wait for its banner.")
    try:
        run = json.loads(run_file.read_text())
        pid = int(run["pid"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TempestError(
            f"{run_file} is not a local cloud's run file ({exc!r}): start "
            f"the cloud again.") from None
    try:
        os.kill(pid, 0)
    except OSError:
        raise TempestError(
            f"{run_file} names launcher pid {run['pid']}, which is not "
            f"running: start the cloud again.") from None
    return run


def admin_connection(run: dict) -> openstack.connection.Connection:
    admin = run["admin"]
    return openstack.connect(
        auth_url=run["auth_url"], username=admin["username"],
        password=admin["password"], project_name=admin["project"],
        user_domain_id="default", project_domain_id="default",
        region_name=run["region"])


def _catalog_types(conn: openstack.connection.Connection) -> frozenset[str]:
    token = conn.session.auth.get_access(conn.session)
    return frozenset(entry["type"]
                     for entry in token.service_catalog.catalog)


def _images(conn: openstack.connection.Connection,
            services: frozenset[str]) -> list[str]:
    """Glance's public bootable active images, ordered by name.

    Nova finds Glance in the catalog (nova.conf ``[glance]``): a cloud
    without it there boots nothing, whatever Tempest is told.  Only public
    images are seen by the projects Tempest makes for its tests.
    """
    if "image" not in services:
        raise TempestError(
            "the catalog has no image service: Nova finds Glance there, "
            "so nothing can boot; is Glance registered (`openstack "
            "catalog list`)?")
    images = [i for i in conn.image.images(visibility="public")
              if i.status == "active" and i.visibility == "public"
              and i.disk_format not in UNBOOTABLE_DISK_FORMATS]
    return [i.id for i in sorted(images, key=lambda i: i.name)]


def _flavors(conn: openstack.connection.Connection,
             say: Say) -> tuple[str, str, tuple[str, ...]]:
    """Two small flavors without extra specs, the second one larger.

    Extra specs are left to the tests that set them: an elastic minimum
    changes how a server is sized, an unscoped key is taken by the
    scheduler's aggregate filter for a host requirement.  Flavors without
    disk are refused to non-admin users booting from an image.
    """
    plain = sorted(
        (f for f in conn.compute.flavors(details=True, is_public=True)
         if not f.extra_specs and not f.is_disabled and f.disk >= 1
         and f.vcpus <= SMALL_VCPUS and f.ram <= SMALL_RAM_MB),
        key=lambda f: (f.ram, f.vcpus, f.disk, f.name))
    for first in plain:
        larger = [f for f in plain if f.ram > first.ram]
        if larger:
            return first.id, larger[0].id, ()
    ids = []
    for name, vcpus, ram, disk in TEMPEST_FLAVORS:
        flavor = conn.compute.find_flavor(name) or conn.compute.create_flavor(
            name=name, vcpus=vcpus, ram=ram, disk=disk, is_public=True)
        ids.append(flavor.id)
    say("tempest: no two small flavors without extra specs; using "
        + ", ".join(name for name, *_ in TEMPEST_FLAVORS))
    return ids[0], ids[1], tuple(name for name, *_ in TEMPEST_FLAVORS)


def _compute_max_microversion(conn: openstack.connection.Connection) -> str:
    resp = conn.compute.get("/")
    resp.raise_for_status()
    return resp.json()["version"]["version"]


def discover(run: dict, say: Say) -> CloudFacts:
    conn = admin_connection(run)
    services = _catalog_types(conn)
    images = _images(conn, services)
    if not images:
        raise TempestError("Glance holds no active image to boot (the "
                           "launcher uploads the guest images as it starts: "
                           "see its output)")
    flavor_ref, flavor_ref_alt, created = _flavors(conn, say)
    nodes = [h for h in conn.compute.hypervisors(details=True)
             if h.state == "up" and h.status == "enabled"]
    return CloudFacts(
        services=services,
        roles=frozenset(r.name for r in conn.identity.roles()),
        compute_max_microversion=_compute_max_microversion(conn),
        compute_nodes=len(nodes),
        image_ref=images[0],
        image_ref_alt=images[1] if len(images) > 1 else images[0],
        flavor_ref=flavor_ref,
        flavor_ref_alt=flavor_ref_alt,
        flavors_created=created,
    )


def nova_options(state: Path) -> configparser.ConfigParser:
    """The cloud's nova.conf, for the options Tempest asks to mirror."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(layout_mod.Layout(state, layout_mod.Ports()).etc
                / "nova" / "nova.conf")
    return parser


# (key, value, reason); a reason of None needs no comment.
Entries = list[tuple[str, object, str | None]]


# Tempest's name: (catalog types, what is lost without it).
SERVICES = {
    "nova": (("compute",), "everything this run is for"),
    "glance": (("image",),
               "Nova boots from Glance's images, so no server can be "
               "tested"),
    "neutron": (("network",),
                "Nova's Neutron is a fake inside each Nova process, with no "
                "API for Tempest to call. Tempest then skips the network "
                "tests, those that make or attach ports, and every compute "
                "test class that asks for a network of its own "
                "(create_default_network: ServersTestJSON, "
                "ServersAdminTestJSON, server metadata, tags, groups, "
                "rescue, instance actions and more)"),
    "cinder": (("block-storage", "volumev3"),
               "nothing to attach, nor to boot from a volume"),
    "swift": (("object-store",), "no containers"),
}


def _service_available(facts: CloudFacts, run: dict) -> Entries:
    entries: Entries = []
    for name, (types, absent) in SERVICES.items():
        present = sorted(set(types) & facts.services)
        entries.append((name, bool(present), (
            f"{present[0]} is in the catalog" if present else
            f"no {'/'.join(types)} service in the catalog: {absent}")))
    entries.append(("horizon", bool(run.get("dashboard_url")),
                    "the run file's dashboard (never in a catalog)"))
    return entries


def _compute_features(facts: CloudFacts, nova: configparser.ConfigParser,
                      hypervisor: str) -> Entries:
    def nova_flag(section: str, key: str, default: bool) -> bool:
        return nova.getboolean(section, key, fallback=default)

    filters = nova.get("filter_scheduler", "enabled_filters",
                       fallback="").split(",")
    unified = nova.get("quota", "driver", fallback="") == (
        "nova.quota.UnifiedLimitsDriver")
    volumes = bool({"block-storage", "volumev3"} & facts.services)
    network = "network" in facts.services
    glance = "image" in facts.services
    return [
        ("console_output", hypervisor != "fake",
         "Nova's fake libvirt runs no guest, so nothing ever writes a "
         "console log" if hypervisor == "fake" else
         "each guest's serial console is logged to a file Nova reads"),
        ("vnc_console", nova_flag("vnc", "enabled", True),
         "nova.conf [vnc] enabled"),
        ("spice_console", nova_flag("spice", "enabled", False),
         "nova.conf [spice] enabled"),
        ("serial_console", nova_flag("serial_console", "enabled", False),
         "nova.conf [serial_console] enabled"),
        ("scheduler_enabled_filters", ",".join(f for f in filters if f),
         "nova.conf [filter_scheduler] enabled_filters: Tempest sends only "
         "the hints of these filters"),
        ("unified_limits", unified, "nova.conf [quota] driver"),
        ("hostname_fqdn_sanitization", True,
         "Nova replaces the dots of a server name in its hostname since "
         "Wallaby (Tempest's default assumes an older Nova)"),
        ("resize", facts.compute_nodes >= 2 or nova_flag(
            "DEFAULT", "allow_resize_to_same_host", False),
         "a resize moves to another host unless nova.conf allows the same "
         f"host; {facts.compute_nodes} compute hosts are up"),
        ("cold_migration", facts.compute_nodes >= 2,
         f"{facts.compute_nodes} compute hosts are up"),
        ("live_migration", facts.compute_nodes >= 2,
         f"{facts.compute_nodes} compute hosts are up"),
        ("interface_attach", network,
         "ports to attach come from the network service"),
        ("snapshot", glance,
         "a snapshot is an image uploaded to the image service"),
        ("shelve", glance, "shelving offloads the server to a snapshot"),
        ("attach_encrypted_volume", volumes, "needs volumes"),
        ("swap_volume", volumes, "needs volumes"),
        ("volume_multiattach", volumes, "needs volumes"),
        ("volume_backed_live_migration", volumes, "needs volumes"),
        ("nova_policy_roles", ",".join(
            r for r in NOVA_POLICY_ROLES if r in facts.roles),
         "the roles Nova's default policies name that Keystone has"),
    ]


def render(run: dict, facts: CloudFacts,
           nova: configparser.ConfigParser, workspace: Path) -> str:
    """tempest.conf, every switch with its reason above it."""
    admin = run["admin"]
    timeout, timeout_reason = BUILD_TIMEOUT[run.get("hypervisor", "fake")]
    scope = nova.getboolean("oslo_policy", "enforce_new_defaults",
                            fallback=True)
    sections: dict[str, Entries] = {
        "DEFAULT": [
            ("log_dir", workspace / "logs", None),
            ("log_file", "tempest.log", None),
        ],
        "oslo_concurrency": [("lock_path", workspace / "lock", None)],
        "auth": [
            ("use_dynamic_credentials", True,
             "Keystone is real: every test class gets projects and users "
             "of its own, made with the admin below"),
            ("create_isolated_networks", False,
             "there is no network service to make them in"),
            ("admin_username", admin["username"], None),
            ("admin_password", admin["password"], None),
            ("admin_project_name", admin["project"], None),
            ("admin_domain_name", "Default", None),
        ],
        "identity": [
            ("uri_v3", run["auth_url"], None),
            ("auth_version", "v3", None),
            ("region", run["region"], None),
            ("v3_endpoint_type", "public", None),
        ],
        "identity-feature-enabled": [
            ("api_v2", False, "Keystone has only the v3 API"),
        ],
        "compute": [
            ("image_ref", facts.image_ref,
             "Glance's public bootable images (not kernels nor ramdisks), "
             "by name"),
            ("image_ref_alt", facts.image_ref_alt, None),
            ("flavor_ref", facts.flavor_ref,
             "small flavors without extra specs (no elastic minimum)"
             + (f"; created: {', '.join(facts.flavors_created)}"
                if facts.flavors_created else "")),
            ("flavor_ref_alt", facts.flavor_ref_alt,
             "larger than flavor_ref: the resize tests grow to it"),
            ("region", run["region"], None),
            ("endpoint_type", "public", None),
            ("min_compute_nodes", facts.compute_nodes,
             "compute hosts up: two enable the multi-host tests"),
            ("max_microversion", facts.compute_max_microversion,
             "what Nova's version document says"),
            ("build_timeout", timeout, timeout_reason),
        ],
        "compute-feature-enabled": _compute_features(
            facts, nova, run.get("hypervisor", "fake")),
        "placement": [("endpoint_type", "public", None)],
        "image": [("region", run["region"], None),
                  ("endpoint_type", "public", None)],
        "validation": [
            ("run_validation", False,
             "no network reaches the guests: no SSH, no ping"),
        ],
        "enforce_scope": [
            ("nova", scope,
             "nova.conf [oslo_policy] enforce_new_defaults (oslo.policy "
             "defaults to true): readers are tested as readers"),
        ],
        "service_available": _service_available(facts, run),
        "dashboard": [
            ("dashboard_url", run.get("dashboard_url", ""), None),
            ("login_url", run.get("dashboard_url", "") + "auth/login/",
             None),
        ],
    }
    out = [f"# Generated by deploy/localcloud/tempest.py for the cloud of "
           f"{run['state_dir']}.", ""]
    for section, entries in sections.items():
        out.append(f"[{section}]")
        for key, value, reason in entries:
            if reason:
                out += textwrap.wrap(reason, 77, initial_indent="# ",
                                     subsequent_indent="# ")
            if isinstance(value, bool):
                value = "true" if value else "false"
            out.append(f"{key} = {value}")
        out.append("")
    return "\n".join(out)


def workspace_of(state: Path) -> Path:
    return state / "tempest"


def write_config(state: Path, say: Say) -> Path:
    """Write ``<state>/tempest/etc/tempest.conf``; return its path."""
    run = read_run_file(state)
    facts = discover(run, say)
    workspace = workspace_of(state)
    conf = workspace / "etc" / "tempest.conf"
    for sub in ("etc", "logs", "lock"):
        (workspace / sub).mkdir(parents=True, exist_ok=True)
    conf.write_text(render(run, facts, nova_options(state), workspace))
    say(f"tempest: {conf} (services: "
        f"{', '.join(sorted(facts.services))})")
    return conf


@dataclasses.dataclass
class Outcome:
    """One run's results, read back from stestr's repository."""

    passed: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    regex: str = ""

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


def read_last_run(workspace: Path) -> Outcome:
    """The last run's tests: passed, skipped (reason), failed (traceback).

    A class whose set-up fails reports as ``setUpClass (<class>)``.
    """
    import subunit
    import testtools

    stream = subprocess.run(
        [str(BIN / "stestr"), "last", "--subunit"], cwd=workspace,
        capture_output=True, check=True).stdout
    outcome = Outcome()

    def record(test: dict) -> None:
        details = test["details"]

        def text(name: str) -> str:
            return details[name].as_text() if name in details else ""

        test_id = test["id"].split("[")[0]
        # An expected failure is a pass to testtools, as to Tempest.
        if test["status"] in ("success", "xfail"):
            outcome.passed.append(test_id)
        elif test["status"] == "skip":
            outcome.skipped[test_id] = text("reason")
        elif test["status"] == "uxsuccess":
            outcome.failed[test_id] = ("passed, but is marked as expected "
                                       "to fail")
        elif test["status"] == "fail":
            outcome.failed[test_id] = text("traceback") or text("reason")

    result = testtools.StreamToDict(record)
    result.startTestRun()
    subunit.ByteStreamToStreamResult(
        io.BytesIO(stream),
        non_subunit_name="stdout").run(result)
    result.stopTestRun()
    return outcome


def recorded_runs(workspace: Path) -> int:
    """How many runs the stestr repository of ``workspace`` holds."""
    counter = workspace / ".stestr" / "next-stream"
    return int(counter.read_text()) if counter.exists() else 0


def run(state: Path, regex: str = DEFAULT_REGEX,
        concurrency: int = DEFAULT_CONCURRENCY,
        say: Say = print) -> int:
    """Configure Tempest for the cloud of ``state`` and run ``regex``.

    Returns Tempest's exit status (0: no test failed).  The outcome is
    also written to ``<state>/tempest/last-run.json``.
    """
    conf = write_config(state, say)
    workspace = workspace_of(state)
    argv = [str(BIN / "tempest"), "run", "--config-file", str(conf),
            "--regex", regex, "--concurrency", str(concurrency),
            "--exclude-list", str(EXCLUDE_LIST)]
    say(f"tempest: running {regex!r}, {concurrency} workers, in "
        f"{workspace}")
    # Tempest writes the workspace's .stestr.conf when given
    # --config-file; the repository is stestr's own.
    if not (workspace / ".stestr").exists():
        subprocess.run([str(BIN / "stestr"), "init"], cwd=workspace,
                       check=True, capture_output=True)
    runs_before = recorded_runs(workspace)
    last_run = workspace / "last-run.json"
    last_run.unlink(missing_ok=True)
    started = time.monotonic()
    status = subprocess.run(argv, cwd=workspace, check=False).returncode
    seconds = time.monotonic() - started
    # stestr's last run would be an earlier one's.
    if recorded_runs(workspace) == runs_before:
        say("tempest: this run recorded no results (no test matches the "
            "regex, or Tempest stopped before running any: see above)")
        return status or 1
    try:
        outcome = read_last_run(workspace)
    except subprocess.CalledProcessError as exc:
        say(f"tempest: no results to read ({exc.stderr.decode().strip()})")
        return status or 1
    outcome.seconds = round(seconds, 1)
    outcome.regex = regex
    last_run.write_text(json.dumps(outcome.as_json(), indent=2))
    say(f"tempest: {len(outcome.passed)} passed, {len(outcome.skipped)} "
        f"skipped, {len(outcome.failed)} failed in {seconds:.0f} s "
        f"(details: {last_run})")
    for test_id in sorted(outcome.failed):
        say(f"  FAILED {test_id}")
    return status
