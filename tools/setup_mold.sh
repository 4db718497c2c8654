#!/usr/bin/env bash
# Installs the mold linker from the system's package manager when it is missing; build/linker.sh
# links with it when present (faster links of every libtorch test binary). Never fails: where mold
# cannot be installed (no apt-get, not root, no network) it says so and the build uses the
# system's default linker. Called by the Makefile; safe to run by hand.
set -uo pipefail

if command -v mold >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: mold is not installed and there is no apt-get; linking with the default linker" >&2
  exit 0
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "setup: mold is not installed and installing it needs root; linking with the default" \
      "linker (install the 'mold' package for faster links)" >&2
    exit 0
  fi
fi
echo "setup: installing mold (apt-get install mold) for faster links" >&2
if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq mold >/dev/null 2>&1; then
  echo "setup: apt-get install mold failed; linking with the default linker" >&2
fi
exit 0
