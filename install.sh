#!/usr/bin/env bash
# install.sh — builds wolfpack from this checkout and installs it on a Debian 12 machine.
#
#   ./install.sh [--prefix DIR] [--controlplane] [--no-deps]
#
# Installs wolfpackd, wolfpack-agent and wolfpack into PREFIX/bin (default /usr/local).
# With --controlplane it also installs and enables the wolfpackd systemd unit (state in
# /var/lib/wolfpack). Node onboarding (--sandbox: agent + Wolf on a GPU node) arrives with
# the node agent's tunnel.
set -euo pipefail
cd "$(dirname "$0")"

prefix=/usr/local
controlplane=0
deps=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) prefix="${1#--prefix=}"; shift ;;
    --controlplane) controlplane=1; shift ;;
    --no-deps) deps=0; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

[ "$deps" = 1 ] && scripts/deps.sh
cmake -S . -B build-install -G Ninja -DCMAKE_BUILD_TYPE=Release -DWP_BUILD_TESTS=OFF \
  -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build build-install
cmake --install build-install >/dev/null
echo "installed wolfpackd, wolfpack-agent, wolfpack into $prefix/bin"

if [ "$controlplane" = 1 ]; then
  sed "s|@BINDIR@|$prefix/bin|g" packaging/systemd/wolfpackd.service > /etc/systemd/system/wolfpackd.service
  systemctl daemon-reload
  systemctl enable --now wolfpackd
  echo "wolfpackd is running: journalctl -u wolfpackd shows the CA pin and join command"
fi
