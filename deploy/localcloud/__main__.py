"""``python -m deploy.localcloud up [--wipe] [--mode mariadb] ...``"""

import argparse
import json
import sys
import time
from pathlib import Path

from deploy.localcloud import cloud, configs, control, layout, tempest


def _say(line: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {line}" if line else "", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.localcloud",
        description="A local OpenStack (Keystone, Placement, Nova with two "
                    "fake-libvirt compute hosts, Horizon) with elastic "
                    "sizing installed, on 127.0.0.1 only.")
    sub = parser.add_subparsers(dest="command", required=True)
    defaults = layout.Ports()

    up = sub.add_parser("up", help="set up (first time), start and seed the "
                                   "cloud; Ctrl-C stops it")
    up.add_argument("--state-dir", type=Path,
                    default=layout.DEFAULT_STATE_DIR,
                    help="where databases, keys, logs live "
                         "(default: %(default)s)")
    up.add_argument("--wipe", action="store_true",
                    help="delete the state directory (and, in MariaDB "
                         "mode, its databases) before starting")
    up.add_argument("--mode", choices=layout.MODES, default="sqlite",
                    help="sqlite: one Nova process, SQLite, in-process "
                         "messaging (default); mariadb: one process per "
                         "Nova service over MariaDB and RabbitMQ")
    up.add_argument("--hypervisor", choices=layout.HYPERVISORS,
                    default="fake",
                    help="fake: Nova's fake libvirt, guests inside "
                         "nova-compute (default, quick); qemu: each compute "
                         "host runs its own libvirtd and real QEMU guests")
    up.add_argument("--no-seed", action="store_true",
                    help="do not create the demo projects, flavors and "
                         "instances")
    up.add_argument("--stock", action="store_true",
                    help="without this project: Nova's own libvirt driver "
                         "and API, Horizon without the plugin (to compare; "
                         "implies --no-seed)")
    up.add_argument("--accept-timeout", type=int, metavar="SECONDS",
                    help="[xloud] accept_timeout of nova.conf: how long "
                         "nova-api waits for a compute host to take an "
                         "adjustment (default: the extension's)")
    up.add_argument("--autopilot", action="append", default=[],
                    metavar="KEY=VALUE",
                    help="an option of nova.conf's [xloud_autopilot] "
                         "(doc/autopilot.md), e.g. mode=on; repeatable "
                         "(default: the extension's, mode off)")
    for name, port in defaults.items():
        up.add_argument(f"--{name}-port", type=int, default=port,
                        help=f"default: {port}")

    wipe = sub.add_parser("wipe", help="delete the state directory")
    wipe.add_argument("--state-dir", type=Path,
                      default=layout.DEFAULT_STATE_DIR)

    ctl = sub.add_parser(
        "control", help="kill (SIGKILL), start again, pause (SIGSTOP) or "
                        "resume one service of a running cloud, or show "
                        "their states")
    ctl.add_argument("--state-dir", type=Path,
                     default=layout.DEFAULT_STATE_DIR)
    ctl.add_argument("action", choices=control.ACTIONS)
    ctl.add_argument("service", nargs="?",
                     help="as named in the launcher's output, e.g. "
                          "nova-compute1")

    tmp = sub.add_parser(
        "tempest", help="configure Tempest for a running cloud and run a "
                        "selection of its tests (doc/tempest.md)")
    tmp.add_argument("--state-dir", type=Path,
                     default=layout.DEFAULT_STATE_DIR)
    tmp.add_argument("--regex", default=tempest.DEFAULT_REGEX,
                     help="stestr selection regex (default: %(default)s)")
    tmp.add_argument("--concurrency", type=int,
                     default=tempest.DEFAULT_CONCURRENCY,
                     help="test workers (default: %(default)s)")
    return parser


def _control(args: argparse.Namespace) -> int:
    if args.action != "status" and not args.service:
        print(f"error: {args.action} needs a service", file=sys.stderr)
        return 2
    lay = layout.Layout(args.state_dir.resolve(), layout.Ports())
    try:
        reply = control.request(lay.control_socket, args.action,
                                args.service)
    except control.ControlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(reply, indent=2))
    return 0


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "control":
        return _control(args)
    if args.command == "tempest":
        try:
            return tempest.run(args.state_dir.resolve(), args.regex,
                               args.concurrency, _say)
        except tempest.TempestError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.command == "wipe":
        try:
            cloud.wipe(layout.Layout(args.state_dir.resolve(),
                                     layout.Ports()), _say)
        except cloud.CloudError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        autopilot = configs.autopilot_options(args.autopilot)
    except configs.OptionError as exc:
        parser.error(f"argument --autopilot: {exc}")
    ports = layout.Ports(**{name: getattr(args, f"{name}_port")
                            for name, _ in layout.Ports().items()})
    lay = layout.Layout(args.state_dir.resolve(), ports, args.mode,
                        args.hypervisor)
    try:
        if args.wipe:
            cloud.wipe(lay, _say)
        xloud_options = {}
        if args.accept_timeout is not None:
            xloud_options["accept_timeout"] = args.accept_timeout
        return cloud.up(lay, _say, do_seed=not (args.no_seed or args.stock),
                        xloud_options=xloud_options, autopilot=autopilot,
                        stock=args.stock)
    except cloud.CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
