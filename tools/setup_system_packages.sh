#!/usr/bin/env bash
# Installs, from the system's package manager, the Debian packages the build uses when they are
# missing:
#   mold         the linker build/linker.sh uses when present (faster links of every libtorch test
#                binary; the system's default linker otherwise);
#   libgloo-dev  Gloo's headers, which crates/cellseg-dist compiles its c10d shim against (the PyPI
#                libtorch ships Gloo compiled but not its headers; ../shared/docs/DISTRIBUTED.md).
#                Without them cellseg-dist builds without Gloo and its multi-process tests fail,
#                saying so.
# Never fails: where a package cannot be installed (no apt-get, not root, no network) it says so.
# Called by the Makefile (`make setup`, which `make test` and `make demo` run); safe to run by hand.
set -uo pipefail

missing=()
command -v mold >/dev/null 2>&1 || missing+=(mold)
[[ -f /usr/include/gloo/config.h ]] || missing+=(libgloo-dev)
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: ${missing[*]} missing and there is no apt-get; install them with your package" \
    "manager (mold: optional, faster links; libgloo-dev: multi-process training)" >&2
  exit 0
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "setup: ${missing[*]} missing and installing needs root (apt-get install ${missing[*]})" >&2
    exit 0
  fi
fi
for pkg in "${missing[@]}"; do
  echo "setup: installing $pkg (apt-get install $pkg)" >&2
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$pkg" >/dev/null 2>&1; then
    echo "setup: apt-get install $pkg failed" >&2
  fi
done
exit 0
