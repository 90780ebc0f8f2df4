#!/bin/sh
# Usage: feed_when_reading.sh INPUT EOT|NOEOT COMMAND...
# Runs COMMAND with its stdin on a fifo. Once COMMAND has printed a line
# starting with "reading" (it is about to block on its first read), waits
# 0.3 s more, then feeds INPUT, followed by a Ctrl-D byte with EOT (the
# PL011's end of input under QEMU). A fixed pause from the start would race
# a slow boot on a loaded machine. Prints COMMAND's output, exits with its
# status.
set -u
input=$1 eot=$2
shift 2
dir=$(mktemp -d) || exit 2
trap 'rm -rf "$dir"' EXIT
mkfifo "$dir/in"
: >"$dir/out"
{
  i=0
  until grep -q '^reading' "$dir/out"; do
    i=$((i + 1))
    [ "$i" -lt 1200 ] || break  # 60 s: give up waiting, feed anyway
    sleep 0.05
  done
  sleep 0.3
  cat "$input"
  if [ "$eot" = EOT ]; then printf '\004'; fi
} >"$dir/in" &
"$@" <"$dir/in" >"$dir/out" 2>&1
rc=$?
cat "$dir/out"
exit "$rc"
