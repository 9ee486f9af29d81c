#!/usr/bin/env bash
# readme-check.sh — runs what the READMEs tell a newcomer to type, so they
# stay true (make test calls it):
#   - every make target README.md names exists (make -n);
#   - every command README.md's reference tables list answers --help;
#   - every "$ command" line of examples/minimal/README.md runs, in order,
#     in one shell, and exits 0; the fixed result lines it shows
#     ("converged", "nothing to do", "exit N", "pong") appear in its output.
# The walk-through needs Docker: without it the script says so and stops,
# unless CI=true, where that is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3
fail() { echo "readme-check: $*" >&2; exit 1; }

for target in demo demo-clean test bench docs build; do
  grep -q "make $target" README.md examples/minimal/README.md docs/*.md 2>/dev/null || continue
  make -n "$target" >/dev/null 2>&1 || fail "README names 'make $target', which make does not know"
done

make -s build || fail "make build failed"
export PATH="$PWD/bin:$PATH"
bin=pullship
while IFS= read -r line; do
  case "$line" in
    *'`pullship` (release side)'*) bin=pullship; continue ;;
    *'`pullship-agent` (host side)'*) bin=pullship-agent; continue ;;
  esac
  sub=$(printf '%s\n' "$line" | sed -n 's/^| `\([a-z -]*\)`\(, `\([a-z -]*\)`\)\{0,1\} |.*/\1|\3/p')
  [ -n "$sub" ] || continue
  for s in ${sub//|/ }; do :; done
  IFS='|' read -r first second <<<"$sub"
  for s in "$first" "$second"; do
    [ -n "$s" ] || continue
    # shellcheck disable=SC2086
    "$bin" $s --help >/dev/null 2>&1 || fail "README lists '$bin $s', which has no --help"
  done
done < README.md

if ! docker info >/dev/null 2>&1; then
  [ "${CI:-}" = true ] && fail "Docker is needed for the examples/minimal walk-through (CI=true)"
  echo "readme-check: no Docker engine; the examples/minimal walk-through was not run"
  exit 0
fi

# The walk-through, command by command.
script=$(mktemp)
out=$(mktemp)
trap 'rm -f "$script" "$out"' EXIT
{
  echo 'set -u'
  awk '
    /^```console/ { inblock = 1; next }
    /^```/        { inblock = 0; next }
    inblock && /^\$ / {
      cmd = substr($0, 3)
      gsub(/\047/, "\047\\\047\047", cmd)
      printf "echo \"+ %s\"\n", cmd
      print substr($0, 3) " || { echo \"readme-check: this command failed\" >&2; exit 1; }"
    }
  ' examples/minimal/README.md
} > "$script"
bash "$script" > "$out" 2>&1
code=$?
if [ $code -ne 0 ]; then
  cat "$out"
  fail "examples/minimal/README.md: a command failed (above)"
fi
# The fixed results the README shows must be what the commands printed.
awk '
  /^```console/ { inblock = 1; next }
  /^```/        { inblock = 0; next }
  inblock && !/^\$ / && /^(converged|nothing to do|exit [0-9]+|pong)$/ { print }
' examples/minimal/README.md | while IFS= read -r want; do
  grep -qx -- "$want" "$out" || { cat "$out"; fail "examples/minimal/README.md shows '$want', the commands did not print it"; }
done || exit 1
echo "readme-check: README.md and examples/minimal/README.md are true to the code"
