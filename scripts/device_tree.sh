#!/usr/bin/env bash
# What a device call carries, and how to make it fit. The device tool sends the checkout's tracked and
# untracked-not-ignored files plus the paths named in `carry`, 64 MiB in all (the library's device
# README). The shipped models/ alone are over that (gradient graphs and the 512-value members), so a
# GPU session takes them out of what travels first, carries the data or a small models folder it
# needs, and puts them back before anything else:
#
#   scripts/device_tree.sh size [PATH...]   MiB a call would send now, carrying PATHs, against 64 MiB
#   scripts/device_tree.sh bytes [PATH...]  the same in bytes, for scripts
#   scripts/device_tree.sh out [PATH...]    take tracked PATHs (default: models) off device calls: out of
#                                           the index and ignored (.git/info/exclude); files stay on disk,
#                                           and a pre-commit hook refuses commits until `in`
#   scripts/device_tree.sh in               put them back as HEAD has them; removes the hook and exclude lines
#
# `out` refuses paths with uncommitted changes, so `in` restores exactly what was there.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=$((64 * 1024 * 1024))
STATE=$(git rev-parse --git-path cae-device-out)
EXCLUDE=$(git rev-parse --git-path info/exclude)
HOOK=$(git rev-parse --git-path hooks/pre-commit)
MARK="# scripts/device_tree.sh out"

travelling_bytes() {
  # Existing tracked and untracked-not-ignored files, then each carried path (files or folders).
  local bytes
  bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
  for path in "$@"; do
    [[ -e $path ]] || { echo "carry: $path does not exist here" >&2; exit 1; }
    bytes=$((bytes + $(find "$path" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')))
  done
  echo "$bytes"
}

case "${1:-}" in
bytes)
  shift
  travelling_bytes "$@"
  ;;
size)
  shift
  bytes=$(travelling_bytes "$@")
  mib=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')
  if ((bytes <= LIMIT)); then
    echo "a device call would send $mib MiB of 64 MiB$( (($#)) && echo " (carrying $*)")"
  else
    echo "a device call would send $mib MiB: over the 64 MiB limit$( [[ -f $STATE ]] || echo "; scripts/device_tree.sh out takes models/ off")" >&2
    exit 1
  fi
  ;;
out)
  shift
  paths=("${@:-models}")
  [[ -f $STATE ]] && { echo "already out: $(paste -sd' ' "$STATE") (scripts/device_tree.sh in first)" >&2; exit 1; }
  for path in "${paths[@]}"; do
    [[ -n $(git ls-files -- "$path") ]] || { echo "$path: not tracked" >&2; exit 1; }
    [[ -z $(git status --porcelain -- "$path") ]] || { echo "$path has uncommitted changes: commit them first" >&2; exit 1; }
  done
  [[ -e $HOOK ]] && { echo "$HOOK exists; not replacing it" >&2; exit 1; }
  printf '%s\n' "${paths[@]}" > "$STATE"
  mkdir -p "$(dirname "$EXCLUDE")" "$(dirname "$HOOK")"
  for path in "${paths[@]}"; do printf '%s\n/%s/\n' "$MARK" "${path%/}" >> "$EXCLUDE"; done
  printf '#!/bin/sh\necho "%s are out of the index for device calls: scripts/device_tree.sh in, then commit" >&2\nexit 1\n' \
    "$(paste -sd' ' "$STATE")" > "$HOOK"
  chmod +x "$HOOK"
  git rm -r -q --cached -- "${paths[@]}"
  echo "out of device calls: ${paths[*]} (files kept; scripts/device_tree.sh in puts them back)"
  "$0" size || true
  ;;
in)
  [[ -f $STATE ]] || { echo "nothing is out"; exit 0; }
  mapfile -t paths < "$STATE"
  git reset -q -- "${paths[@]}"
  [[ -f $EXCLUDE ]] && sed -i "\|^$MARK\$|{N;d}" "$EXCLUDE"
  rm -f "$HOOK" "$STATE"
  changed=$(git status --porcelain -- "${paths[@]}")
  [[ -z $changed ]] || { echo "back in the index, but changed since out:"$'\n'"$changed" >&2; exit 1; }
  echo "back: ${paths[*]}"
  ;;
*)
  echo "usage: $0 size [PATH...] | bytes [PATH...] | out [PATH...] | in" >&2
  exit 2
  ;;
esac
