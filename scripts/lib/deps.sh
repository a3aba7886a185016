# shellcheck shell=bash
# Shared helpers for scripts/test, scripts/server and .ci/run: source this
# file, do not run it.
#
#   ensure_debian_package <command> <package>
#   ensure_protoc
#
# does nothing (and prints nothing) when <command> is already there (a
# <command> starting with / is a file that must exist);
# otherwise it installs the Debian package <package> with apt-get, running
# `apt-get update` once per script run first.

_krake_apt_updated=false

# Runs its arguments as root: directly when we are root, else through sudo.
_krake_as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "deps: need root or sudo to run: $*" >&2
    return 1
  fi
}

# Succeeds when <command> can be run. A command found only in a system
# directory missing from PATH (Debian puts some servers there) gets that
# directory appended to PATH, so later steps and tests find it too.
_krake_find_command() {
  local cmd=$1 dir
  if [[ $cmd == /* ]]; then
    [[ -e $cmd ]]
    return
  fi
  command -v "$cmd" >/dev/null 2>&1 && return 0
  for dir in /usr/bin /usr/sbin /usr/local/bin /usr/local/sbin; do
    if [[ -x $dir/$cmd ]]; then
      export PATH="$PATH:$dir"
      return 0
    fi
  done
  return 1
}

# ensure_debian_package <command> <package>
ensure_debian_package() {
  if [[ $# -ne 2 ]]; then
    echo "usage: ensure_debian_package <command> <package>" >&2
    return 2
  fi
  local cmd=$1 pkg=$2
  _krake_find_command "$cmd" && return 0

  if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: '$cmd' is missing and there is no apt-get here;" \
      "install '$pkg' (or whatever provides '$cmd') yourself" >&2
    return 1
  fi
  echo "deps: '$cmd' is missing; installing Debian package '$pkg'" >&2
  if [[ $_krake_apt_updated != true ]]; then
    _krake_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    _krake_apt_updated=true
  fi
  _krake_as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "$pkg"

  if ! _krake_find_command "$cmd"; then
    echo "deps: installed '$pkg' but '$cmd' is still not found" >&2
    return 1
  fi
}

# ensure_protoc: protoc and the well-known .proto files etcd-client's build
# script imports (google/protobuf/descriptor.proto, struct.proto).
ensure_protoc() {
  ensure_debian_package protoc protobuf-compiler
  ensure_debian_package /usr/include/google/protobuf/descriptor.proto libprotobuf-dev
}
