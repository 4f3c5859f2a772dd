#!/bin/sh
# map-compare.sh - `make bench-map [MAP_BEFORE=<revision>]`: map_get of this
# tree (keyed SipHash-1-3) against the map.c of an older revision (FNV-1a,
# default f31fffa). For maps of 10,000 keys (more than the caches hold) and
# of 100 keys (all in L1), with keys of 10 and 32 bytes: the best of 5
# timing runs (ns per lookup, 3,000,000 lookups a run) and the
# instructions per lookup counted by callgrind (only inside the lookup
# loop, 5 runs of 20,000 lookups). Both binaries run one after the other
# in one sitting.
set -eu
BEFORE=${1:-f31fffa}
CC=${CC:-cc}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT INT TERM
mkdir -p "$out/old/core"
git show "$BEFORE:src/core/map.c" >"$out/old/map.c"
git show "$BEFORE:src/core/map.h" >"$out/old/core/map.h"
$CC -O2 -g -std=gnu11 -D_GNU_SOURCE -I"$out/old" bench/mapbench.c "$out/old/map.c" -o "$out/mapbench-before"
$CC -O2 -g -std=gnu11 -D_GNU_SOURCE -Isrc bench/mapbench.c src/core/map.c src/core/siphash.c -o "$out/mapbench-after"
for keys in 10000 100; do
    for len in 10 32; do
        for which in before after; do
            printf '%-6s %s ' "$which" "$("$out/mapbench-$which" "$len" $((3000000 / keys)) "$keys")"
            if command -v valgrind >/dev/null; then
                valgrind --tool=callgrind --toggle-collect=lookups --callgrind-out-file="$out/cg" \
                    "$out/mapbench-$which" "$len" $((20000 / keys)) "$keys" >/dev/null 2>&1
                total=$(sed -n 's/^summary: //p' "$out/cg")
                echo "instructions_per_get=$((total / 100000))"
            else
                echo "(no valgrind: no instruction count)"
            fi
        done
    done
done
