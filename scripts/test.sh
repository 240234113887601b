#!/usr/bin/env bash
# scripts/test.sh — the whole test suite, from a fresh Debian 12 machine (as root):
# installs build + test dependencies, checks formatting, builds twice (gcc -Werror, then
# clang with ASan+UBSan) and runs every unit, integration and fuzz-corpus test with ctest on
# both, repeats the TLS/connection/WebSocket/tunnel tests on a build with the mbedTLS TLS backend,
# then builds the libFuzzer targets and fuzzes each for a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=$(nproc)
t0=$(date +%s)

scripts/deps.sh --test

echo "== clang-format check"
bad=$(git ls-files '*.c' '*.h' | xargs clang-format --dry-run --Werror 2>&1 | grep -c "error:" || true)
if [ "$bad" != "0" ]; then
  git ls-files '*.c' '*.h' | xargs clang-format --dry-run --Werror 2>&1 | head -40
  echo "clang-format: the tree is not formatted (run: cmake --build build --target format)" >&2
  exit 1
fi

export WP_GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || true)

echo "== build: gcc, RelWithDebInfo, -Werror"
cmake -S . -B build-test -G Ninja -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-test -j "$jobs"
t1=$(date +%s)
echo "== ctest (gcc build)"
ctest --test-dir build-test --output-on-failure -j "$jobs"
t2=$(date +%s)

echo "== build: clang, ASan+UBSan, -Werror"
cmake -S . -B build-asan -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DWP_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$jobs"
t3=$(date +%s)
echo "== ctest (ASan+UBSan build)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs"
t4=$(date +%s)

echo "== build: gcc, mbedTLS TLS backend (-DWP_TLS_BACKEND=mbedtls); TLS, connection, WebSocket, tunnel tests"
cmake -S . -B build-mbedtls -G Ninja -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWP_TLS_BACKEND=mbedtls >/dev/null
cmake --build build-mbedtls -j "$jobs" --target test_tls test_conn test_ws wolfpackd wolfpack-agent
ctest --test-dir build-mbedtls --output-on-failure -R '^(unit\.test_(tls|conn|ws)|integration\.test_tunnel_e2e)$'
t4b=$(date +%s)

echo "== build: clang, libFuzzer targets; run each for a few seconds on its seed corpus"
cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DWP_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "$jobs" --target fuzz_frame fuzz_http fuzz_json fuzz_mux fuzz_opts_addr fuzz_router fuzz_tls_server fuzz_wolf_reply fuzz_proxy_head
WP_FUZZ_SECONDS=${WP_FUZZ_SECONDS:-5} ctest --test-dir build-fuzz --output-on-failure -L '^fuzz$'
t5=$(date +%s)

echo "== timings: gcc build $((t1 - t0))s (incl. deps), gcc tests $((t2 - t1))s, asan build $((t3 - t2))s, asan tests $((t4 - t3))s, mbedtls backend $((t4b - t4))s, fuzz $((t5 - t4b))s, total $((t5 - t0))s"
