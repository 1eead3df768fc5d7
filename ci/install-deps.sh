#!/usr/bin/env bash
# Installs the system packages storage-tracker builds and tests with (Debian/Ubuntu, as root or
# with sudo): ClickHouse, MPICH and Open MPI with what the MPI bindings' bindgen needs, Slurm
# and munge, protoc, Node.js and Chromium (the web UI's build and browser tests), ncdu and gdu
# (which must read the ncdu exports), Prometheus and promtool (the dashboard's queries and the
# alert rules are tested against a real one); from PyPI, chdb-core (a current ClickHouse engine in
# process, for the portable-SQL test) and schemathesis (requests generated from the API's
# OpenAPI document); from npm, the UI's packages (ui/package-lock.json). Packages already present
# are left alone; apt is retried while another apt holds the lock.
set -euo pipefail

packages=(
  clickhouse-server clickhouse-client
  mpich libmpich-dev libclang1-14 libclang-common-14-dev
  openmpi-bin libopenmpi-dev
  slurm-wlm munge
  protobuf-compiler
  nodejs chromium
  ncdu gdu
  prometheus
  curl ca-certificates pkg-config
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
[ ${#missing[@]} -eq 0 ] || echo "install-deps: installing ${missing[*]}"
apt_get() {
  local attempt
  for attempt in 1 2 3 4 5; do
    if DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 -q "$@"; then
      return 0
    fi
    echo "install-deps: apt-get $1 failed (attempt $attempt), retrying in $((attempt * 10)) s" >&2
    sleep $((attempt * 10))
  done
  echo "install-deps: apt-get $* kept failing; check the network and the apt sources" >&2
  return 1
}
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all system packages present"
else
  apt_get update
  apt_get install -y --no-install-recommends "${missing[@]}"
fi

pip_install() {
  for attempt in 1 2 3; do
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@" && return 0
    sleep $((attempt * 10))
  done
  echo "install-deps: pip install $* kept failing" >&2
  return 1
}
if python3 -c 'import chdb' 2>/dev/null; then
  echo "install-deps: chdb-core present"
else
  echo "install-deps: installing chdb-core from PyPI (about 180 MB)"
  pip_install 'chdb-core==26.9.*'
fi
if command -v schemathesis >/dev/null; then
  echo "install-deps: schemathesis present"
else
  echo "install-deps: installing schemathesis from PyPI"
  pip_install 'schemathesis==4.*'
fi

# The UI's build (Vite 8) needs Node.js 20.19 or later; Debian's own nodejs may be older.
node_ok=$(node -e 'const [a, b] = process.versions.node.split(".").map(Number); console.log(a > 20 || (a === 20 && b >= 19) ? 1 : 0)' 2>/dev/null || echo 0)
if [ "$node_ok" != 1 ]; then
  echo "install-deps: Node.js $(node --version 2>/dev/null || echo missing) is too old for the UI's build; install Node.js 20.19 or later (e.g. from NodeSource)" >&2
  exit 1
fi
if ! command -v npm >/dev/null; then
  apt_get install -y --no-install-recommends npm
fi
ui=$(cd "$(dirname "$0")/../ui" && pwd)
stamp="$ui/node_modules/.installed-from"
lock_sum=$(sha256sum "$ui/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$lock_sum" ]; then
  echo "install-deps: UI packages present"
else
  echo "install-deps: installing the UI's packages (npm ci)"
  for attempt in 1 2 3; do
    (cd "$ui" && npm ci --no-audit --no-fund --loglevel=error) && break
    [ "$attempt" -eq 3 ] && { echo "install-deps: npm ci kept failing; check the npm registry" >&2; exit 1; }
    sleep $((attempt * 10))
  done
  echo "$lock_sum" >"$stamp"
fi

if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo is missing: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
