#!/usr/bin/env bash
# Installs the system packages storage-tracker builds and tests with (Debian/Ubuntu, as root or
# with sudo): ClickHouse, MPICH with what the MPI bindings' bindgen needs, Slurm and munge,
# protoc; and, from PyPI, chdb-core (a current ClickHouse engine in process, for the portable-SQL
# test) and schemathesis (requests generated from the API's OpenAPI document). Packages already present are left alone; apt is retried while another apt holds the lock.
set -euo pipefail

packages=(
  clickhouse-server clickhouse-client
  mpich libmpich-dev libclang1-14 libclang-common-14-dev
  slurm-wlm munge
  protobuf-compiler
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

if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo is missing: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
