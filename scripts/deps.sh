#!/usr/bin/env bash
# Installs the build dependencies from Debian/Ubuntu packages when they are
# missing (needs root or sudo). Safe to run again: it does nothing when all
# are present.
set -euo pipefail
pkgs=(cmake make gcc pkg-config libopenblas-dev libhdf5-dev libinih-dev zlib1g-dev valgrind hdf5-tools)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
