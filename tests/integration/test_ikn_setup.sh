#!/bin/sh
# spbe-ikn-setup as the containers run it, against a real broker started with the bindings
# of `spbe-ikn bindings`: every member of `spbe-ikn members` registered with its rights, its
# key 0600, a second run changing nothing, and a record of the wrong shape refused.
# Usage: test_ikn_setup.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1 src=$2
tmp=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAILED $*" >&2; exit 1; }
mkdir "$tmp/bin"
ln -s "$build/tools/spbe" "$build/adapters/ikn/spbe-ikn" "$tmp/bin/"
PATH="$tmp/bin:$PATH"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SPBE_BROKER="tcp://127.0.0.1:$port" SPBE_DATA="$tmp/data" IKN_KEYS="$tmp/keys"
spbe-ikn bindings >"$tmp/ikn.conf"
"$build/broker/spbe-broker" --config "$tmp/ikn.conf" --check-config >/dev/null ||
    fail "the bindings are no valid broker configuration"
"$build/broker/spbe-broker" --config "$tmp/ikn.conf" --data "$SPBE_DATA" --listen "$SPBE_BROKER" \
    --http off 2>"$tmp/broker.log" &
pid=$!
out=$(sh "$src/adapters/ikn/spbe-ikn-setup") || fail "setup: $out"
members=$(spbe-ikn members | wc -l)
[ "$(echo "$out" | grep -c registered)" -eq "$members" ] || fail "not every member registered: $out"
again=$(sh "$src/adapters/ikn/spbe-ikn-setup") || fail "second setup: $again"
[ -z "$again" ] || fail "a second run changed something: $again"
spbe member show bkn/siasn --key "$SPBE_DATA/admin.key" >"$tmp/bkn.txt"
grep -q 'subscribe   ikn.relokasi.asn.\*' "$tmp/bkn.txt" || fail "bkn/siasn rights: $(cat "$tmp/bkn.txt")"
grep -q 'call        dukcapil.ikd.verifikasi' "$tmp/bkn.txt" || fail "bkn/siasn call right"
[ "$(stat -c %a "$IKN_KEYS/bkn_siasn.key")" = 600 ] || fail "a key readable by others"
# the bindings hold: a ministry's record that is no SkenarioAsn is refused
if spbe pub ikn.relokasi.asn.kemenkeu '{"nip":"1"}' --schema spbe.ikn.v1.SkenarioAsn \
    --key "$IKN_KEYS/kemenkeu_simpeg.key" >/dev/null 2>"$tmp/pub.err"; then
    fail "a JSON text accepted as a SkenarioAsn"
fi
grep -q SCHEMA_MISMATCH "$tmp/pub.err" || fail "not SCHEMA_MISMATCH: $(cat "$tmp/pub.err")"
echo "ok: $members members registered once, with their rights and 0600 keys; bindings hold"
