#!/usr/bin/env bash
# Installs the tools st-bench compares storage-scan with: find and du (coreutils, findutils),
# ncdu, gdu, fd and the duplicate finders rdfind, jdupes and fdupes from apt; pdu
# (parallel-disk-usage) and dust (du-dust) from crates.io.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends ncdu gdu fd-find rdfind jdupes fdupes
for crate in parallel-disk-usage:pdu du-dust:dust; do
  command -v "${crate#*:}" >/dev/null || cargo install --locked "${crate%%:*}"
done
