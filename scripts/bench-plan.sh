#!/usr/bin/env bash
# Benchmarks the planning engine (segment.Read + plan.Build) against Miller
# on the same CSV and checks the memory budget. Prints a markdown table.
#   targets: plan >= 2x Miller's rows/s at 1M rows; peak RSS < 150 MB at 1M;
#            RSS growth < 40 B per extra profile from 1M to 2M rows.
# Usage: scripts/bench-plan.sh [runs]   (default 5 runs each, median)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
for tool in go jq; do
  command -v "$tool" >/dev/null || { echo "bench-plan: $tool is required" >&2; exit 1; }
done
have_mlr=1
command -v mlr >/dev/null || have_mlr=0

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-plan.XXXXXX")
trap 'rm -rf "$work"' EXIT
go build -o "$work/planbench" ./internal/planbench
pb="$work/planbench"
echo "generating 1M and 2M row CSVs in $work ..." >&2
"$pb" -generate -rows 1000000 -file "$work/1m.csv"
"$pb" -generate -rows 2000000 -file "$work/2m.csv"
"$pb" -generate -rows 1000000 -changed 0.01 -file "$work/1m-changed.csv"

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { jq -r ".$1" "$2"; }

# Miller reads the CSV from the page cache and writes to /dev/null; the plan
# writes ~10,000 batch files, spill files and the snapshot. Like for like,
# the plan's output goes to tmpfs (memory, no disk); the same first run with
# its output on disk is shown too. On this VM's virtual disk that number
# swings between about 0.6 s and 5 s for the same run, with the kernel's
# time, not the planner's.
out=""
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  out=$(mktemp -d /dev/shm/bench-plan.XXXXXX)
  trap 'rm -rf "$work" "$out"' EXIT
else
  echo "bench-plan: no writable /dev/shm; the plan's output goes to $work (disk)" >&2
  out=$work
fi
: >"$work/p1" ; : >"$work/p2" ; : >"$work/re" ; : >"$work/m" ; : >"$work/disk"
for i in $(seq "$runs"); do
  echo "run $i/$runs ..." >&2
  if [ "$have_mlr" = 1 ]; then # interleaved with the plan runs so load affects both alike
    s=$(date +%s.%N); mlr --icsv --ojsonl cat "$work/1m.csv" >/dev/null; e=$(date +%s.%N)
    echo "$e - $s" | bc -l >>"$work/m"
  fi
  "$pb" -file "$work/1m.csv" -tmp "$out" -save-snapshot "$work/1m.snapshot" >>"$work/p1"
  "$pb" -file "$work/1m-changed.csv" -tmp "$out" -snapshot "$work/1m.snapshot" >>"$work/re"
  "$pb" -file "$work/2m.csv" -tmp "$out" >>"$work/p2"
  "$pb" -file "$work/1m.csv" -tmp "$work" >>"$work/disk"
done

med() { jq -r ".$1" "$2" | median; }
t1=$(med elapsed_s "$work/p1"); c1=$(med cpu_s "$work/p1"); r1=$(med peak_rss_bytes "$work/p1")
t2=$(med elapsed_s "$work/p2"); r2=$(med peak_rss_bytes "$work/p2")
tr=$(med elapsed_s "$work/re"); cr=$(med cpu_s "$work/re"); br=$(jq -r .batches "$work/re" | head -1)
td=$(med elapsed_s "$work/disk"); cd=$(med cpu_s "$work/disk")
dmin=$(jq -r .elapsed_s "$work/disk" | sort -g | head -1); dmax=$(jq -r .elapsed_s "$work/disk" | sort -g | tail -1)
b1=$(jq -r .batches "$work/p1" | head -1)
bb1=$(jq -r .batch_bytes "$work/p1" | head -1)

# What the disk alone costs: the same number of files of the same average
# size, written by a shell loop into the same file system as the disk runs.
calib() { # DIR -> "elapsed kernel-cpu"
  mkdir -p "$1/calib"
  local TIMEFORMAT='%R %S'
  { time (cd "$1/calib" && d=$(head -c "$((bb1 / b1))" /dev/zero | tr '\0' x) &&
      for i in $(seq 1 "$b1"); do printf '%s' "$d" >"f$i"; done); } 2>&1
  rm -rf "$1/calib"
}
read -r cde cds < <(calib "$work" || echo "n/a n/a") || { cde=n/a; cds=n/a; }

printf '\n| measure | value | target |\n|---|---|---|\n'
printf '| plan 1M rows, first run (%s batch files), output on tmpfs: elapsed / CPU | %.2f s / %.2f s (%.0f rows/s) | |\n' "$b1" "$t1" "$c1" "$(echo "1000000 / $t1" | bc -l)"
printf '| plan 1M rows, re-run with 1%% changed (%s batch files), output on tmpfs: elapsed / CPU | %.2f s / %.2f s (%.0f rows/s) | |\n' "$br" "$tr" "$cr" "$(echo "1000000 / $tr" | bc -l)"
printf '| plan 2M rows, first run, output on tmpfs: elapsed | %.2f s (%.0f rows/s) | |\n' "$t2" "$(echo "2000000 / $t2" | bc -l)"
printf '| plan 1M rows, first run, output on disk: elapsed / CPU (min–max) | %.2f s / %.2f s (%.2f–%.2f s) | |\n' "$td" "$cd" "$dmin" "$dmax"
printf '| the disk alone, right after: a shell loop writing %s files of %s bytes there: elapsed / kernel CPU | %s s / %s s | |\n' "$b1" "$((bb1 / b1))" "$cde" "$cds"
if [ "$have_mlr" = 1 ]; then
  tm=$(median <"$work/m")
  printf '| mlr --icsv --ojsonl cat, 1M rows | %.2f s (%.0f rows/s) | |\n' "$tm" "$(echo "1000000 / $tm" | bc -l)"
  printf '| **speed vs Miller, first run** | **%.2fx** | >= 2x |\n' "$(echo "$tm / $t1" | bc -l)"
  # Each run's Miller and plan ran back to back: their ratio is the least
  # disturbed by this VM's slow and fast phases. The lowest one is the claim.
  ratios=$(paste "$work/m" <(jq -r .elapsed_s "$work/p1") | awk '{printf "%.2f\n", $1 / $2}' | sort -g)
  printf '| speed vs Miller, first run, each run (lowest first) | %s | every one >= 2x |\n' "$(echo $ratios | sed 's/ /x, /g')x"
  printf '| speed vs Miller, 1%% re-run | %.2fx | >= 2x |\n' "$(echo "$tm / $tr" | bc -l)"
  printf '| speed vs Miller, first run, output on disk | %.2fx | |\n' "$(echo "$tm / $td" | bc -l)"
else
  printf '| speed vs Miller | mlr not installed: apt-get install -y miller | >= 2x |\n'
fi
printf '| peak RSS at 1M | %.1f MB | < 150 MB |\n' "$(echo "$r1 / 1048576" | bc -l)"
printf '| peak RSS at 2M | %.1f MB | |\n' "$(echo "$r2 / 1048576" | bc -l)"
printf '| RSS growth per extra profile, 1M -> 2M | %.1f B | < 40 B |\n' "$(echo "($r2 - $r1) / 1000000" | bc -l)"
printf '\n(median of %s runs; load average at the end: %s)\n' "$runs" "$(cut -d' ' -f1-3 /proc/loadavg)"
