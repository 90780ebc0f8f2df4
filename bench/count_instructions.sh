#!/usr/bin/env bash
# Instructions per round trip of a hosted kernel path, counted by
# callgrind (deterministic, unlike the host's timings). Runs
# build/hosted/bin/spindle_probe on one vCPU with N and 2N round trips;
# the difference of the totals over N is one round trip, start-up and
# shutdown cancelled out. With --functions, the same difference per
# function (self cost), largest first. bf-channel counts the anchor's
# path the same way (build/hosted/bin/anchor_probe: Boost.Fiber's
# buffered_channel ping-pong, as BM_BoostFiberChannelPingPong runs it).
#
#   bench/count_instructions.sh [--functions] [sem|yield|bf-channel] [N]   (default: sem 100000)
#
# Needs valgrind (tools/spindle setup installs it) and a hosted build
# (tools/spindle build). See docs/benchmarks.md, "Counting instructions on hosted".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
functions=0
if [[ ${1:-} == --functions ]]; then functions=1; shift; fi
path=${1:-sem}
n=${2:-100000}
[[ $path == sem || $path == yield || $path == bf-channel ]] ||
  { echo "count_instructions: unknown path '$path' (sem, yield, bf-channel)" >&2; exit 2; }
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "count_instructions: N must be a positive integer, not '$n'" >&2; exit 2; }
probe=$root/build/hosted/bin/spindle_probe
args=(--cpus 1 "$path")
if [[ $path == bf-channel ]]; then
  probe=$root/build/hosted/bin/anchor_probe
  args=("$path")
fi
[[ -x $probe ]] || { echo "count_instructions: $probe is missing: run tools/spindle build" >&2; exit 1; }
command -v valgrind > /dev/null || { echo "count_instructions: valgrind is missing: run tools/spindle setup" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

total() {  # total RUN: the run's instruction count (callgrind's summary line)
  awk '/^summary:/ {print $2}' "$tmp/$1.out"
}
for k in 1 2; do
  valgrind --tool=callgrind --callgrind-out-file="$tmp/$k.out" "$probe" "${args[@]}" $((k * n)) \
    > "$tmp/$k.log" 2>&1 || { cat "$tmp/$k.log" >&2; exit 1; }
done
a=$(total 1)
b=$(total 2)
echo "$path: $(( (b - a) / n )) instructions per round trip ($n and $((2 * n)) round trips: $a and $b in all)"
((functions)) || exit 0
for k in 1 2; do
  # "COUNT (PCT)  FILE:FUNCTION [OBJECT]" -> "COUNT<tab>FUNCTION" (the file is
  # where the instructions' source line is, which for inlined code is not
  # the function's own file: merged here).
  callgrind_annotate --threshold=100 --auto=no "$tmp/$k.out" 2>/dev/null |
    sed -n 's/^ *\([0-9,]*\) ([ 0-9.]*%) *[^ :]*:\(.*\) \[.*\]$/\1\t\2/p; s/^ *\([0-9,]*\) ([ 0-9.]*%) *[^ :]*:\([^[]*\)$/\1\t\2/p' |
    tr -d , > "$tmp/$k.fn"
done
awk -F'\t' -v n="$n" 'NR == FNR { a[$2] += $1; next } { b[$2] += $1 }
  END { for (f in b) { d = (b[f] - a[f]) / n; if (d >= 1) printf "%8.1f  %s\n", d, substr(f, 1, 110) } }' "$tmp/1.fn" "$tmp/2.fn" | sort -rn
