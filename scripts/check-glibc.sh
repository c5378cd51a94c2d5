#!/usr/bin/env bash
# Fails when a binary needs a newer glibc than the system it must run on.
#   check-glibc.sh [--max X.Y] FILE...      (default --max 2.34: Lambda's provided.al2023)
# Reads the GLIBC_x.y version of every symbol each binary imports (readelf, from binutils) and
# prints the ones above the maximum, one line per binary:
#   target/lambda/relaycast-api/bootstrap: needs GLIBC_2.39 (above 2.34): pidfd_spawnp@GLIBC_2.39
# A statically linked binary needs no glibc at all and passes.
set -euo pipefail

max=2.34
if [ "${1:-}" = --max ]; then
  max=${2:?"--max needs a version such as 2.34"}
  shift 2
fi
if ! [[ $max =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]]; then
  echo "check-glibc: --max must look like 2.34, not '$max'" >&2
  exit 2
fi
if [ $# -eq 0 ]; then
  echo "usage: check-glibc.sh [--max X.Y] FILE..." >&2
  exit 2
fi
if ! command -v readelf >/dev/null; then
  echo "check-glibc: readelf is missing: apt-get install binutils" >&2
  exit 2
fi

status=0
for file in "$@"; do
  if [ ! -f "$file" ]; then
    echo "$file: no such file" >&2
    status=1
    continue
  fi
  if ! header=$(readelf --file-header "$file" 2>&1); then
    echo "$file: not an ELF binary: ${header##*: }" >&2
    status=1
    continue
  fi
  # Undefined dynamic symbols are the ones the binary takes from shared libraries; their
  # version (after @ or @@) says which glibc first had them.
  offending=$(readelf --wide --dyn-syms "$file" | awk -v max="$max" '
    function above(v, limit,    a, b, i, n) {
      n = split(v, a, "."); split(limit, b, ".")
      for (i = 1; i <= 3; i++) {
        if ((a[i] + 0) > (b[i] + 0)) return 1
        if ((a[i] + 0) < (b[i] + 0)) return 0
      }
      return 0
    }
    $7 == "UND" && $8 ~ /@@?GLIBC_[0-9]/ {
      sym = $8
      version = sym
      sub(/.*@@?GLIBC_/, "", version)
      if (above(version, max)) print version "\t" sym
    }' | sort -t "$(printf '\t')" -k1,1V -k2,2 | uniq)
  if [ -n "$offending" ]; then
    highest=$(printf '%s\n' "$offending" | tail -n 1 | cut -f1)
    symbols=$(printf '%s\n' "$offending" | cut -f2 | tr '\n' ' ')
    echo "$file: needs GLIBC_$highest (above $max): ${symbols% }"
    status=1
  fi
done
exit $status
