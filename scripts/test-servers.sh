#!/usr/bin/env bash
# Makes sure the PostgreSQL and Redis server binaries the tests start are installed (Debian
# packages), once: the tests run their own servers on loopback in temporary directories.
# Installs only as root or through sudo; otherwise prints what to install.
set -euo pipefail

have_pg() {
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1 \
    || [ -n "${MMTRADER_PG_BIN:-}" ]
}
have_redis() { command -v redis-server >/dev/null 2>&1; }

missing=()
have_pg || missing+=(postgresql)
have_redis || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "test-servers: missing ${missing[*]}; install the PostgreSQL server and redis-server with your package manager" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "test-servers: missing ${missing[*]}; run: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "test-servers: installing ${missing[*]}…"
export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  "${SUDO[@]}" apt-get update -qq >/dev/null
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts the packaged services; the tests use their own servers, so stop those.
for svc in postgresql redis-server; do
  "${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || true
done
have_pg && have_redis
