#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: Debian packages, the virtualenv at
# .venv/ with Nova 34, Horizon 27, Keystone (for the local cloud) and the
# test tools, and this project.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf '==> %s\n' "$*"; }

APT_PACKAGES=(libvirt-dev pkg-config libvirt-daemon libvirt-daemon-system
              libvirt-clients chromium chromium-driver qemu-system-x86
              qemu-utils busybox-static cpio kmod qemu-guest-agent)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null
    else
        say "missing Debian packages (run as root to install): ${missing[*]}"
    fi
fi

PYTHON=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
    say "creating virtualenv .venv/ with $PYTHON"
    "$PYTHON" -m venv .venv
fi

stamp=.venv/.xloud-requirements
want=$(cat requirements/constraints.txt setup.cfg | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Nova 34, Horizon 27 and the test tools into .venv/"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -c requirements/constraints.txt \
        "$root[nova,dashboard,localcloud,test]"
    .venv/bin/pip check
    echo "$want" > "$stamp"
else
    # Only this project changes between runs: refresh it alone.
    .venv/bin/pip install -q --no-deps --force-reinstall "$root"
fi
versions=$(.venv/bin/python -c 'from importlib.metadata import version as v; print(", ".join(f"{p} {v(p)}" for p in ("nova", "horizon", "openstacksdk", "libvirt-python")))')
say "set-up complete: $versions"
