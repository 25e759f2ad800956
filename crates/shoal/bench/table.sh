#!/usr/bin/env bash
# Issue 15's table of workloads, for one or more builds side by side:
#
#   bash crates/shoal/bench/table.sh OUT BIN...        (ROUNDS=2 by default)
#
# Each round starts, for each BIN in turn, a fresh `BIN up` (3 meta nodes, 3
# chunk servers, replication 2, TLS; ports 17900-17932, data in OUT/data,
# removed first) and runs against it, one after another:
#   shoal bench small-write --clients 4 --count 2000
#   shoal bench small-write --clients 16 --count 4000
#   shoal bench small-read --clients 4 --count 2000
#   shoal bench rand-read --clients 4 --count 20000
#   shoal bench meta --clients 4 --count 500
#   shoal bench meta-read --clients 4 --count 20000
#   shoal bench seq-write --size 1GiB
#   shoal bench seq-read --size 1GiB
# ONLY=REGEX runs only the workloads it matches. Lines "BIN ROUND WORKLOAD OPS_PER_SEC MB_PER_SEC" go to OUT/results (a
# workload a build does not have is left out), and a table of the medians,
# one column per build, is printed at the end. Release builds (`cargo build
# --release -p shoal`); run nothing else meanwhile, since the machine's two
# cores are the bottleneck.
set -u
OUT=$(realpath -m "$1")
shift
bins=()
for bin in "$@"; do bins+=("$(realpath "$bin")"); done
set -- "${bins[@]}"
ROUNDS=${ROUNDS:-2}
mkdir -p "$OUT"
: >"$OUT/results"
M=127.0.0.1:17900,127.0.0.1:17901,127.0.0.1:17902
workloads=(
  "small-write --clients 4 --count 2000"
  "small-write --clients 16 --count 4000"
  "small-read --clients 4 --count 2000"
  "rand-read --clients 4 --count 20000"
  "meta --clients 4 --count 500"
  "meta-read --clients 4 --count 20000"
  "seq-write --size 1GiB"
  "seq-read --size 1GiB"
)
for round in $(seq 1 "$ROUNDS"); do
  for B in "$@"; do
    rm -rf "$OUT/data" "$OUT/home"
    mkdir -p "$OUT/home"
    HOME=$OUT/home "$B" up --dir "$OUT/data" --base-port 17900 >"$OUT/up.log" 2>&1 &
    up=$!
    # Ready once a file can be written (meta has a leader and enough chunk servers).
    ready=
    for _ in $(seq 1 120); do
      echo ready | HOME=$OUT/home "$B" --meta $M put - /.ready >/dev/null 2>&1 && ready=1 && break
      sleep 1
    done
    if [ -z "$ready" ]; then
      echo "the cluster of $B never took a write; its log: $OUT/up.log" >&2
      kill "$up"
      exit 1
    fi
    for w in "${workloads[@]}"; do
      [[ $w =~ ${ONLY:-.} ]] || continue
      # shellcheck disable=SC2086
      json=$(HOME=$OUT/home timeout 600 "$B" --meta $M bench $w --json 2>>"$OUT/bench.log") || continue
      python3 -c '
import json, sys
d = json.loads(sys.argv[4])
print(sys.argv[1], sys.argv[2], sys.argv[3].replace(" ", ""), round(d["ops_per_sec"], 1), round(d.get("mb_per_sec") or 0, 1))
' "$B" "$round" "$w" "$json" | tee -a "$OUT/results"
    done
    kill "$up" 2>/dev/null
    wait "$up" 2>/dev/null
    sleep 5
  done
done
python3 - "$OUT/results" "$@" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
bins = sys.argv[2:]
order = []
for r in rows:
    if r[2] not in order:
        order.append(r[2])
print("| workload | " + " | ".join(bins) + " |")
print("|---|" + "---|" * len(bins))
for w in order:
    cells = []
    for b in bins:
        ops = [float(r[3]) for r in rows if r[0] == b and r[2] == w]
        mbs = [float(r[4]) for r in rows if r[0] == b and r[2] == w]
        if not ops:
            cells.append("-")
        elif w.startswith("seq-"):
            cells.append("%.1f MB/s (%s)" % (statistics.median(mbs), ", ".join("%.1f" % x for x in mbs)))
        else:
            cells.append("%.0f/s (%s)" % (statistics.median(ops), ", ".join("%.0f" % x for x in ops)))
    print("| " + w + " | " + " | ".join(cells) + " |")
EOF
