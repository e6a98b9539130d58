#!/usr/bin/env bash
# Turns the CPU profiles of `cargo bench --bench throughput -- --perf DIR` into what
# docs/performance.md shows: a flamegraph SVG per profile (inferno) and, per profile, each
# part's share of the subject's CPU samples, so a share times the run's CPU per job gives the
# part's microseconds per job.
#
#   scripts/profile.sh DIR            # every DIR/*.perf.data
#
# Needs perf, and inferno's collapser and flamegraph (`cargo install inferno`).
set -euo pipefail

dir=${1:?usage: scripts/profile.sh DIR}
for tool in perf inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 2; }
done

# A sample whose innermost frame is the kernel's counts as kernel. Any other counts once, for
# the first pattern that matches a frame of its stack, tried from the innermost frame outwards:
# for the work it was doing (malloc called by serde_json counts as alloc, serde_json called by
# the worker as JSON).
parts='
alloc          _rjem_|^je_|malloc|free|realloc|calloc|_int_malloc|_int_free|cfree|alloc::raw_vec|__rust_alloc|__rust_dealloc
json           serde_json|serde::
redis          redis::
tracing        tracing|tracing_core|tracing_subscriber
metrics        prometheus|metrics::
hashing        sha2|siphasher|core::hash|hashbrown
http client    reqwest|hyper_util::client|hyper::client|hyper::proto
amqp           lapin|amq_protocol
worker         wxcourier::
tokio          tokio::
libc           ^__GI_|^__libc_|^__memcpy|^__memmove|^__memset|^__memcmp|^syscall$|^epoll_wait
'

for data in "$dir"/*.perf.data; do
  [ -e "$data" ] || { echo "no *.perf.data in $dir" >&2; exit 2; }
  base=${data%.perf.data}
  # --all marks kernel frames with a _[k] suffix.
  perf script -i "$data" 2>/dev/null | inferno-collapse-perf --all > "$base.folded"
  # Frames under 2 pixels wide are left out: the full graph is megabytes, this one ~150 KB.
  inferno-flamegraph --minwidth 2 --title "$(basename "$base")" < "$base.folded" > "$base.svg"
  echo "== $(basename "$base") ($base.svg)"
  awk -v parts="$parts" '
    BEGIN {
      n = split(parts, lines, "\n")
      for (i = 1; i <= n; i++) {
        if (lines[i] ~ /^[[:space:]]*$/) continue
        name = lines[i]; sub(/[[:space:]]{2,}.*/, "", name)
        pat = lines[i]; sub(/^[^[:space:]]+( [^[:space:]]+)?[[:space:]]{2,}/, "", pat)
        k++; names[k] = name; pats[k] = pat
      }
    }
    {
      count = $NF; $NF = ""; total += count
      nf = split($0, frames, ";")
      hit = "other"
      if (frames[nf] ~ /_\[k\] *$/) hit = "kernel"
      for (f = nf; f >= 1 && hit == "other"; f--)
        for (j = 1; j <= k; j++)
          if (frames[f] ~ pats[j]) { hit = names[j]; break }
      share[hit] += count
    }
    END {
      for (h in share) printf "%6.1f%%  %s\n", 100 * share[h] / total, h | "sort -rn"
      close("sort -rn")
      printf "%6.2f  s of CPU sampled\n", total / 1e9
    }' "$base.folded"
  # The worker's own functions, each counted once per sample whose stack holds it (inclusive).
  echo "-- worker functions, inclusive"
  awk '
    {
      count = $NF; $NF = ""; total += count
      nf = split($0, frames, ";")
      delete seen
      for (f = 1; f <= nf; f++) {
        name = frames[f]
        if (name !~ /^wxcourier::/ || name in seen) continue
        seen[name] = 1; share[name] += count
      }
    }
    END { for (h in share) printf "%6.1f%%  %s\n", 100 * share[h] / total, substr(h, 1, 140) }
  ' "$base.folded" | sort -rn | head -25
done
