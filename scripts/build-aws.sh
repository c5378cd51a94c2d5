#!/usr/bin/env bash
# Builds what infra/relaycast.yaml deploys:
#   <out>/lambda/<bin>/bootstrap.zip   each bin of relaycast-functions as a Lambda function: the
#                                      binary named `bootstrap`, linked against glibc 2.34 or
#                                      older so it runs on provided.al2023
#   <out>/worker-image/                the relay and recorder bins and the entrypoint: the
#                                      context of infra/Dockerfile
# and, with --image, the worker image from that context.
#
#   scripts/build-aws.sh [--debug] [--out DIR] [-p PACKAGE]... [--image [TAG]]
#     --debug      the dev profile instead of `lambda` (functions) and `release` (workers):
#                  a quicker build, for tests
#     --out DIR    where the zips and the image context go (default: <repo>/target, the paths
#                  the template's CodeUri names)
#     -p PACKAGE   build only relaycast-functions or relaycast-workers (default: both)
#     --image TAG  also `docker build` the worker image as TAG (default relaycast-worker:latest)
#
# Needs cargo-zigbuild and ziglang (scripts/install-deps.sh aws installs them). Each package is
# built by a cargo invocation of its own, so that cargo's feature unification cannot pull the
# SQLite adapters of relaycast-workers (or of the relaycast host) into the Lambda binaries. The
# build directory is $CARGO_TARGET_DIR (default <repo>/target).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Lambda's provided.al2023 has glibc 2.34; Debian bookworm, the worker image, has 2.36.
target=x86_64-unknown-linux-gnu.2.34
glibc_max=2.34
debug=false
out="$root/target"
packages=()
image=""

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) debug=true ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    -p | --package)
      case "${2:-}" in
        relaycast-functions | relaycast-workers) packages+=("$2") ;;
        *) echo "build-aws: -p takes relaycast-functions or relaycast-workers, not '${2:-}'" >&2; exit 2 ;;
      esac
      shift ;;
    --image)
      if [ -n "${2:-}" ] && [ "${2#-}" = "$2" ]; then image=$2; shift; else image=relaycast-worker:latest; fi ;;
    -h | --help) usage ;;
    *) echo "build-aws: unknown argument '$1'" >&2; usage ;;
  esac
  shift
done
[ ${#packages[@]} -gt 0 ] || packages=(relaycast-functions relaycast-workers)
mkdir -p "$out"
out=$(cd "$out" && pwd)

if ! cargo zigbuild --help >/dev/null 2>&1; then
  echo "build-aws: cargo-zigbuild is missing: run scripts/install-deps.sh aws" >&2
  exit 1
fi
if ! command -v zig >/dev/null && ! python3 -m ziglang version >/dev/null 2>&1; then
  echo "build-aws: zig is missing (the ziglang package of PyPI): run scripts/install-deps.sh aws" >&2
  exit 1
fi

# Builds the bins of package $1 with profile $2 and prints the path of each executable.
build_bins() {
  local package=$1 profile=$2 messages
  messages=$(mktemp)
  echo "build-aws: cargo zigbuild -p $package --bins --target $target --profile $profile" >&2
  if ! cargo zigbuild --locked -p "$package" --bins --target "$target" --profile "$profile" \
    --message-format=json-render-diagnostics >"$messages"; then
    rm -f "$messages"
    return 1
  fi
  # Cargo's own account of what it built, rather than a guess at target/<triple>/<dir>/.
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bin" in m["target"]["kind"]:
        print(m["executable"])
' "$messages"
  rm -f "$messages"
}

# A debug zip is for a test, not an upload: compress it quickly.
zip_level=9
$debug && zip_level=1
list=$(mktemp)
trap 'rm -f "$list"' EXIT
built=()
for package in "${packages[@]}"; do
  case "$package" in
    relaycast-functions)
      profile=lambda
      $debug && profile=dev
      build_bins "$package" "$profile" >"$list"
      mapfile -t bins <"$list"
      if [ ${#bins[@]} -eq 0 ]; then
        echo "build-aws: relaycast-functions has no bins to deploy" >&2
        exit 1
      fi
      for bin in "${bins[@]}"; do
        name=$(basename "$bin")
        dir="$out/lambda/$name"
        rm -rf "$dir"
        mkdir -p "$dir"
        cp "$bin" "$dir/bootstrap"
        # Lambda runs the executable named bootstrap at the root of the zip. A fixed date and
        # mode: the same binary gives the same zip, so a deploy uploads only what changed.
        python3 -c '
import sys, zipfile
src, dst, level = sys.argv[1], sys.argv[2], int(sys.argv[3])
info = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
info.external_attr = (0o100755 & 0xFFFF) << 16
info.compress_type = zipfile.ZIP_DEFLATED
with open(src, "rb") as f, zipfile.ZipFile(dst, "w") as z:
    z.writestr(info, f.read(), compresslevel=level)
' "$dir/bootstrap" "$dir/bootstrap.zip" "$zip_level"
        built+=("$dir/bootstrap")
        echo "build-aws: $dir/bootstrap.zip ($(du -k "$dir/bootstrap.zip" | cut -f1) KiB)" >&2
      done
      ;;
    relaycast-workers)
      profile=release
      $debug && profile=dev
      build_bins "$package" "$profile" >"$list"
      mapfile -t bins <"$list"
      context="$out/worker-image"
      rm -rf "$context"
      mkdir -p "$context"
      for worker in relay recorder; do
        bin=""
        for b in "${bins[@]}"; do [ "$(basename "$b")" = "$worker" ] && bin=$b; done
        if [ -z "$bin" ]; then
          echo "build-aws: relaycast-workers built no '$worker' bin" >&2
          exit 1
        fi
        cp "$bin" "$context/$worker"
        built+=("$context/$worker")
      done
      install -m 0755 infra/worker-entrypoint.sh "$context/worker-entrypoint.sh"
      echo "build-aws: worker image context $context" >&2
      ;;
  esac
done

scripts/check-glibc.sh --max "$glibc_max" "${built[@]}"

if [ -n "$image" ]; then
  if [ ! -d "$out/worker-image" ]; then
    echo "build-aws: --image needs the worker bins (-p relaycast-workers)" >&2
    exit 2
  fi
  docker build -f infra/Dockerfile -t "$image" "$out/worker-image"
  echo "build-aws: image $image" >&2
fi
