#!/usr/bin/env bash
# scripts/run-controlplane.sh — one command from a fresh Debian 12 machine to a running
# control plane: installs dependencies, builds (Release) into build/, and runs wolfpackd
# in the foreground with its state in /var/lib/wolfpack (override: WOLFPACK_STATE_DIR).
# Extra arguments are passed to wolfpackd (e.g. --listen 0.0.0.0:9443).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DWP_BUILD_TESTS=OFF >/dev/null
cmake --build build
exec build/bin/wolfpackd "$@"
