#!/usr/bin/env bash
# scripts/deps.sh — installs wolfpack's build (and, with --test, test) dependencies
# from Debian 12's archive. Idempotent; needs root. Used by the README's commands and CI.
set -euo pipefail

BUILD_PKGS=(build-essential cmake ninja-build pkg-config git
  libuv1-dev libwslay-dev libpq-dev libcjson-dev libmbedtls-dev libssl-dev libcurl4-openssl-dev
  node-llhttp
  postgresql)
TEST_PKGS=(clang clang-format libclang-rt-14-dev python3 openssl curl ca-certificates procps stunnel4
  prometheus)  # promtool: test_agent_status checks /metrics with `promtool check metrics`

want=("${BUILD_PKGS[@]}")
if [ "${1:-}" = "--test" ]; then
  want+=("${TEST_PKGS[@]}")
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/deps.sh: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "scripts/deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
