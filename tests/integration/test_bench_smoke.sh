#!/bin/sh
# bench/run --quick end to end, so that the comparison with NATS JetStream cannot rot: every
# workload runs on both systems and latest.csv has a number in each cell. Nothing about speed
# is checked. The one cell allowed n/a is spbe-bus's batch-signed row, for a build whose
# `spbe bench pub` has no --batch.
# Usage: test_bench_smoke.sh SOURCE_DIR BUILD_DIR
set -eu
src=$1 build=$2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Under the sanitizers, memory errors still fail the run, but not leak reports at exit: those
# belong to each program's own tests, and libzmq's I/O thread sometimes still holds a buffer
# when `spbe bench consume --members 4` exits, which would make this check fail at random.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
    bash "$src/bench/run" --quick --build "$build" --out "$out" >"$out/run.log" 2>&1 || {
    cat "$out/run.log" >&2
    echo "FAILED bench/run --quick" >&2
    exit 1
}
/usr/bin/python3 - "$out/latest.csv" <<'EOF'
import csv, sys

rows = list(csv.DictReader(open(sys.argv[1])))
expected = {"publish, 1 publisher, window 1000": 1, "publish, 8 publishers, window 1000": 1,
            "publish, 8 publishers, batch-signed (1000)": 1, "consume with acks, 1 member": 1,
            "consume with acks, 4 members": 1, "latency at 1000 msgs/s": 4,
            "latency at 10000 msgs/s": 4, "1000 sessions publishing, 1000 msgs/s in all": 5}
failures = []
seen = {}
for r in rows:
    seen[r["workload"]] = seen.get(r["workload"], 0) + 1
    batch = "batch-signed" in r["workload"]
    for system in ("spbe", "nats"):
        value = r[system]
        if value == "n/a" and batch and system == "spbe":
            continue
        try:
            float(value)
        except ValueError:
            failures.append("%s %s: %s has no number (%r)" % (r["workload"], r["metric"],
                                                              system, value))
if seen != expected:
    failures.append("rows %s, expected %s" % (seen, expected))
for f in failures:
    print("FAILED", f, file=sys.stderr)
sys.exit(1 if failures else 0)
EOF
echo "ok: bench/run --quick, every workload on spbe-bus and NATS JetStream"
