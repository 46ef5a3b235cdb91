"""``python -m deploy.localcloud up [--wipe] [--mode mariadb] ...``"""

import argparse
import sys
import time
from pathlib import Path

from deploy.localcloud import cloud, layout


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
    up.add_argument("--no-seed", action="store_true",
                    help="do not create the demo projects, flavors and "
                         "instances")
    for name, port in defaults.items():
        up.add_argument(f"--{name}-port", type=int, default=port,
                        help=f"default: {port}")

    wipe = sub.add_parser("wipe", help="delete the state directory")
    wipe.add_argument("--state-dir", type=Path,
                      default=layout.DEFAULT_STATE_DIR)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "wipe":
        try:
            cloud.wipe(layout.Layout(args.state_dir.resolve(),
                                     layout.Ports()), _say)
        except cloud.CloudError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    ports = layout.Ports(**{name: getattr(args, f"{name}_port")
                            for name, _ in layout.Ports().items()})
    lay = layout.Layout(args.state_dir.resolve(), ports, args.mode)
    try:
        if args.wipe:
            cloud.wipe(lay, _say)
        return cloud.up(lay, _say, do_seed=not args.no_seed)
    except cloud.CloudError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
