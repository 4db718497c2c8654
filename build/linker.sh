#!/bin/sh
# The linker driver cargo uses on x86_64 Linux (.cargo/config.toml): the system C compiler, with
# mold as the linker when it is installed (tools/setup_system_packages.sh installs it where it can). Every
# test binary and example links libtorch, and mold links faster than GNU ld. Without mold this is
# plain `cc`, as with no linker setting at all.
if command -v mold >/dev/null 2>&1; then
  exec cc -fuse-ld=mold "$@"
fi
exec cc "$@"
