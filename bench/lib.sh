# bench/lib.sh - what bench/run and bench/sweep share: a fresh spbe-broker or nats-server
# on a free loopback port, stopped by its PID; each command's output kept, and on failure
# the command and its stderr printed. Sourced by bash; the caller sets $build and $work
# (a temporary directory) and calls bench_stop_all from its EXIT trap.
# shellcheck shell=bash disable=SC2034,SC2154  # the caller sets build, work, bench_dir and reads what is set here

spbe_pid="" nats_pid=""
spbe_dir="" nats_dir=""
instance=0

bench_fail() {
    echo "bench: $*" >&2
    exit 1
}

# A port nothing listens on now (the kernel's choice).
bench_free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# bench_wait_log PID FILE TEXT: until FILE holds TEXT (20 s at most); fails if PID died.
bench_wait_log() {
    local pid=$1 file=$2 text=$3 i
    for ((i = 0; i < 400; i++)); do
        grep -q -- "$text" "$file" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench: no '$text' from the server; its log:" >&2
    sed 's/^/  /' "$file" >&2
    return 1
}

# Tools this build must have: spbe-broker, spbe, spbe-nats-bench; and nats-server.
bench_check_tools() {
    spbe_broker=$build/broker/spbe-broker
    spbe=$build/tools/spbe
    nats_bench=$build/bench/spbe-nats-bench
    local f
    for f in "$spbe_broker" "$spbe"; do
        [ -x "$f" ] || bench_fail "$f missing: build first (cmake --build $build)"
    done
    [ -x "$nats_bench" ] || bench_fail "$nats_bench missing: it is built where libnats-dev is" \
        "installed (scripts/install-deps --bench), then cmake -S . -B $build"
    command -v nats-server >/dev/null || bench_fail "nats-server missing (scripts/install-deps --bench)"
}

# A fresh spbe-broker with a member bench/run that may publish and subscribe bench.>;
# sets SPBE_BROKER and spbe_key.
spbe_start() {
    instance=$((instance + 1))
    spbe_dir=$work/spbe.$instance
    mkdir -p "$spbe_dir"
    local port
    port=$(bench_free_port)
    export SPBE_BROKER=tcp://127.0.0.1:$port
    # one bench member holds every session of a workload (up to 1000 publishers)
    "$spbe_broker" --data "$spbe_dir/data" --listen "$SPBE_BROKER" --http off \
        --member-max-sessions 0 2>"$spbe_dir/broker.log" &
    spbe_pid=$!
    bench_wait_log "$spbe_pid" "$spbe_dir/broker.log" event=started || bench_fail "spbe-broker did not start"
    spbe_key=$spbe_dir/bench.key
    bench_setup "$spbe" keygen bench/run -o "$spbe_key" --broker-pub "$spbe_dir/data/broker.pub"
    bench_setup "$spbe" member add bench/run --key "$spbe_dir/data/admin.key" \
        --key-file "$spbe_key.pub" --pub 'bench.>' --sub 'bench.>'
}

# bench_server_stop PID DIR: stops a server this script started, by its PID, and removes
# its directory (either may be empty).
bench_server_stop() {
    if [ -n "$1" ]; then
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
    [ -z "$2" ] || rm -rf "$2"
}

spbe_stop() {
    bench_server_stop "$spbe_pid" "$spbe_dir"
    spbe_pid="" spbe_dir=""
}

# A fresh nats-server with JetStream storing in a new directory; sets nats_url.
nats_start() {
    instance=$((instance + 1))
    nats_dir=$work/nats.$instance
    mkdir -p "$nats_dir"
    local port
    port=$(bench_free_port)
    nats_url=nats://127.0.0.1:$port
    nats-server -js -sd "$nats_dir/store" -a 127.0.0.1 -p "$port" 2>"$nats_dir/nats.log" &
    nats_pid=$!
    bench_wait_log "$nats_pid" "$nats_dir/nats.log" "Server is ready" ||
        bench_fail "nats-server did not start"
}

nats_stop() {
    bench_server_stop "$nats_pid" "$nats_dir"
    nats_pid="" nats_dir=""
}

bench_stop_all() {
    spbe_stop
    nats_stop
}

# A setup command (keygen, member add): its output only if it fails.
bench_setup() {
    local log=$work/setup.log
    "$@" >"$log" 2>&1 || {
        echo "bench: failed: $*" >&2
        sed 's/^/  /' "$log" >&2
        exit 1
    }
}

# bench_measure OUT CMD...: runs a benchmark; its JSON line goes to OUT. On failure, the
# command and its stderr, and exit 1 (the caller's trap stops the servers). Returns 3,
# without failing, if the command refused an option this build does not have yet.
bench_measure() {
    local out=$1 err=$work/stderr rc=0
    shift
    "$@" >"$out.tmp" 2>"$err" || rc=$?
    if [ "$rc" = 2 ] && grep -q "unknown or incomplete option" "$err"; then
        rm -f "$out.tmp"
        return 3
    fi
    if [ "$rc" != 0 ] || ! grep -q '^{.*}$' "$out.tmp"; then
        echo "bench: failed (exit $rc): $*" >&2
        sed 's/^/  /' "$err" "$out.tmp" >&2
        rm -f "$out.tmp"
        exit 1
    fi
    grep '^{.*}$' "$out.tmp" | tail -n 1 >"$out"
    rm -f "$out.tmp"
}

# bench_measure_rss OUT PID ARGS...: bench_measure, with the private resident memory
# (RssAnon: page cache aside) of the server PID sampled every 100 ms; the highest sample
# goes into the JSON line as "server_rss_kib".
bench_measure_rss() {
    local out=$1 pid=$2 peak=$work/rss.peak rc=0
    shift 2
    echo 0 >"$peak"
    (
        max=0
        while kill -0 "$pid" 2>/dev/null; do
            v=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
            if [ "${v:-0}" -gt "$max" ]; then
                max=$v
                echo "$max" >"$peak.tmp" && mv "$peak.tmp" "$peak" # never seen half written
            fi
            sleep 0.1
        done
    ) &
    local sampler=$!
    bench_measure "$out" "$@" || rc=$?
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    [ "$rc" = 0 ] || return "$rc"
    local kib
    kib=$(cat "$peak" 2>/dev/null || true)
    [[ $kib =~ ^[0-9]+$ ]] || kib=0
    sed -i "s/}\$/,\"server_rss_kib\":$kib}/" "$out"
}

# The machine, as key: value lines.
bench_machine() {
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "cores: $(nproc)"
    echo "memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel: $(uname -sr)"
    echo "storage: $(df -PT "$work" | awk 'NR == 2 {print $2}') (where both servers keep their data)"
    echo "nats-server: $(nats-server --version 2>&1 | sed 's/^nats-server: //')"
    echo "libnats: $(pkg-config --modversion libnats 2>/dev/null || echo unknown)"
    echo "spbe-bus: $(git -C "$bench_dir/.." describe --always --dirty 2>/dev/null || echo unknown)"
}
