# wsfan build. `make run` and `make test` are the two commands of README.md;
# both install what is missing first (scripts/install-deps, quiet when done).

PKGS      := libuv jansson hiredis libssl libcrypto libjwt zlib
CC        ?= cc
CFLAGS    ?= -O2 -g
WARN      := -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE
DEPCFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS    := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lpthread -lm
SAN       := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

SRCS      := $(wildcard src/*.c src/*/*.c)
HDRS      := $(wildcard src/*.h src/*/*.h)
LIB_SRCS  := $(filter-out src/main.c,$(SRCS))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
FUZZ_SRCS := $(wildcard fuzz/fuzz_*.c)
VERSION   := $(shell cat VERSION)

B := build
# The pages served from the binary: URL path, then file (scripts/embed-web).
WEB_ASSETS := / web/index.html /dashboard web/dashboard.html /wsfan.js clients/js/wsfan.js
WEB_GEN   := $(B)/gen/web_assets.c
OBJS      := $(SRCS:src/%.c=$(B)/release/%.o) $(B)/release/web_assets.o
ASAN_OBJS := $(SRCS:src/%.c=$(B)/asan/%.o) $(B)/asan/web_assets.o
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(B)/unit/%)
FUZZ_BINS := $(FUZZ_SRCS:fuzz/%.c=$(B)/fuzz/%)
PYTHON    := /usr/bin/python3
# A test that hangs fails with its stack after this many seconds instead
# of holding up the whole run (python3-pytest-timeout).
PYTEST    := $(PYTHON) -m pytest --timeout=300
FUZZ_SECONDS ?= 15

.PHONY: all deps run test layers unit integration integration-asan fuzz fuzz-smoke js-test browser-test examples-test clean install uninstall

all: $(B)/wsfan $(B)/wsfan.1

deps:
	@scripts/install-deps

run: deps
	@$(MAKE) --no-print-directory all
	$(B)/wsfan $(ARGS)

test: deps
	@$(MAKE) --no-print-directory all $(B)/wsfan-asan $(UNIT_BINS) $(FUZZ_BINS)
	@$(MAKE) --no-print-directory layers unit integration integration-asan js-test browser-test examples-test bench-smoke fuzz-smoke chaos-smoke

$(B)/release/%.o: src/%.c $(HDRS) VERSION
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) $(DEPCFLAGS) -Isrc -DWSFAN_VERSION='"$(VERSION)"' -c $< -o $@

$(B)/asan/%.o: src/%.c $(HDRS) VERSION
	@mkdir -p $(@D)
	$(CC) -O1 -g $(SAN) $(WARN) $(DEPCFLAGS) -Isrc -DWSFAN_VERSION='"$(VERSION)"' -c $< -o $@

$(WEB_GEN): scripts/embed-web $(filter-out /%,$(WEB_ASSETS)) | $(B)/gen
	scripts/embed-web $@ $(WEB_ASSETS)

$(B)/release/web_assets.o: $(WEB_GEN) src/app/web.h | $(B)/release
	$(CC) $(CFLAGS) $(WARN) -Isrc -c $< -o $@

$(B)/asan/web_assets.o: $(WEB_GEN) src/app/web.h | $(B)/asan
	$(CC) -O1 -g $(SAN) $(WARN) -Isrc -c $< -o $@

$(B)/wsfan: $(OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# The manual page, from the binary's own --help (scripts/gen-man).
$(B)/wsfan.1: $(B)/wsfan scripts/gen-man
	$(PYTHON) scripts/gen-man $< > $@.tmp && mv $@.tmp $@

$(B)/wsfan-asan: $(ASAN_OBJS)
	$(CC) $(SAN) -o $@ $^ $(LDLIBS)

# Unit tests link the sanitized objects of every module but main.
$(B)/unit/%: tests/unit/%.c $(filter-out $(B)/asan/main.o,$(ASAN_OBJS)) | $(B)/unit
	$(CC) -O1 -g $(SAN) $(WARN) $(DEPCFLAGS) -Isrc $^ -o $@ $(LDLIBS) -lcmocka

# Fuzz targets link the modules they exercise (fuzz/<target>.deps lists them).
$(B)/fuzz/%: fuzz/%.c fuzz/%.deps $(SRCS) $(HDRS) | $(B)/fuzz
	clang -O1 -g -fsanitize=fuzzer,address,undefined $(filter-out -Werror,$(WARN)) -Werror $(DEPCFLAGS) -Isrc \
	  $< $(addprefix src/,$(shell cat fuzz/$*.deps)) -o $@ $(LDLIBS)

# No include goes up a layer (docs/architecture.md, "Layers").
layers:
	@$(PYTHON) scripts/check-layers src && echo "== layers: no include goes up"

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

integration: $(B)/wsfan
	WSFAN_BIN=$(CURDIR)/$(B)/wsfan $(PYTEST) -q -x tests/integration

integration-asan: $(B)/wsfan-asan
	WSFAN_BIN=$(CURDIR)/$(B)/wsfan-asan WSFAN_SANITIZED=1 \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(PYTEST) -q -x tests/integration

fuzz-smoke: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); mkdir -p $(B)/fuzz/corpus-$$n; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 $(B)/fuzz/corpus-$$n fuzz/corpus/$${n#fuzz_} 2>&1 | tail -n 2; done

fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); mkdir -p $(B)/fuzz/corpus-$$n; \
	  $$f -max_total_time=$${FUZZ_SECONDS_LONG:-300} $(B)/fuzz/corpus-$$n fuzz/corpus/$${n#fuzz_}; done

# The JavaScript client against a real server, then the pages in Chromium.
js-test: $(B)/wsfan node_modules/.package-lock.json
	WSFAN_BIN=$(CURDIR)/$(B)/wsfan node --test tests/js/*.test.mjs

browser-test: $(B)/wsfan node_modules/.package-lock.json
	WSFAN_BIN=$(CURDIR)/$(B)/wsfan node --test tests/browser/*.test.mjs
# examples-test: each of examples/ run by its run.sh and driven as a user would (tests/examples).
examples-test: $(B)/wsfan node_modules/.package-lock.json
	WSFAN_BIN=$(CURDIR)/$(B)/wsfan $(PYTEST) -q tests/examples

# Chaos (tests/chaos/run.mjs, docs/guarantees.md): three nodes on one Redis,
# clients in Node, faults from a seeded schedule, then every client's messages
# against the histories. CHAOS_SECONDS, CHAOS_SEED, CHAOS_CLIENTS, CHAOS_QUIET
# choose the run; the report goes to build/chaos/.
.PHONY: chaos chaos-smoke
chaos: $(B)/wsfan node_modules/.package-lock.json
	WSFAN_BIN=$(CURDIR)/$(B)/wsfan node tests/chaos/run.mjs

chaos-smoke: $(B)/wsfan node_modules/.package-lock.json
	node --test tests/chaos/verify.test.mjs
	WSFAN_BIN=$(CURDIR)/$(B)/wsfan CHAOS_SECONDS=$${CHAOS_SECONDS:-20} CHAOS_CLIENTS=$${CHAOS_CLIENTS:-60} \
	  node tests/chaos/run.mjs

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

$(B)/release $(B)/asan $(B)/unit $(B)/fuzz $(B)/gen:
	@mkdir -p $@

clean:
	rm -rf $(B)

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary, wsfan(1), the
# systemd unit (ExecStart under PREFIX) and, when the tree has one and none
# is there yet, the example configuration in /etc/wsfan. make uninstall
# removes them, the configuration only if it is still the example.
PREFIX   ?= /usr/local
BINDIR   := $(PREFIX)/bin
MAN1DIR  := $(PREFIX)/share/man/man1
UNITDIR  := $(PREFIX)/lib/systemd/system
CONFDIR  := /etc/wsfan
CONF_SRC := packaging/wsfan.conf

install: $(B)/wsfan $(B)/wsfan.1
	install -D -m 755 $(B)/wsfan $(DESTDIR)$(BINDIR)/wsfan
	install -D -m 644 $(B)/wsfan.1 $(DESTDIR)$(MAN1DIR)/wsfan.1
	sed 's|^ExecStart=/usr/local/bin/wsfan |ExecStart=$(BINDIR)/wsfan |' packaging/wsfan.service > $(B)/wsfan.service
	install -D -m 644 $(B)/wsfan.service $(DESTDIR)$(UNITDIR)/wsfan.service
	@if [ ! -f $(CONF_SRC) ]; then echo "install: no $(CONF_SRC) in this tree, no configuration installed"; \
	elif [ -e $(DESTDIR)$(CONFDIR)/wsfan.conf ]; then echo "install: kept the existing $(DESTDIR)$(CONFDIR)/wsfan.conf"; \
	else echo "install -D -m 644 $(CONF_SRC) $(DESTDIR)$(CONFDIR)/wsfan.conf"; \
	  install -D -m 644 $(CONF_SRC) $(DESTDIR)$(CONFDIR)/wsfan.conf; fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/wsfan $(DESTDIR)$(MAN1DIR)/wsfan.1 $(DESTDIR)$(UNITDIR)/wsfan.service
	@if [ -f $(CONF_SRC) ] && cmp -s $(CONF_SRC) $(DESTDIR)$(CONFDIR)/wsfan.conf; then \
	  echo "rm -f $(DESTDIR)$(CONFDIR)/wsfan.conf"; rm -f $(DESTDIR)$(CONFDIR)/wsfan.conf; \
	  rmdir $(DESTDIR)$(CONFDIR) 2>/dev/null || true; \
	elif [ -e $(DESTDIR)$(CONFDIR) ]; then echo "uninstall: left $(DESTDIR)$(CONFDIR) alone (your configuration)"; fi

# Benchmarks: bench/run.sh measures wsfan and its peers into docs/benchmarks.md;
# bench-smoke checks the load generator's counts against wsfan (no speeds).
.PHONY: bench bench-smoke bench-cluster
$(B)/bench/%: bench/%.c
	@mkdir -p $(@D)
	$(CC) -O2 -g -Wall -Wextra -Werror -std=gnu11 -pthread $< -o $@ -lz -lssl -lcrypto

bench: $(B)/wsfan $(B)/bench/loadgen $(B)/bench/limit $(B)/bench/sequencer
	bench/run.sh
	@$(MAKE) --no-print-directory bench-cluster
	@$(MAKE) --no-print-directory bench-sequencer

# Redis commands and CPU per message on each shard of a 3-master Redis
# Cluster, two nodes (bench/cluster_cost.py; figures in docs/benchmarks.md).
bench-cluster: $(B)/wsfan
	/usr/bin/python3 bench/cluster_cost.py --bin $(B)/wsfan --rooms 30 --messages 6000

# The sequencer's ceiling (bench/sequencer.c): publishes per second through
# one process's bus, from several worker threads, with no subscriber.
.PHONY: bench-sequencer
$(B)/bench/sequencer: bench/sequencer.c $(filter-out $(B)/release/main.o,$(OBJS))
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) $(DEPCFLAGS) -Isrc $^ -o $@ $(LDLIBS)

bench-sequencer: $(B)/bench/sequencer
	$(B)/bench/sequencer --workers 2 --seconds 3
	$(B)/bench/sequencer --workers 2 --seconds 3 --ephemeral

bench-smoke: $(B)/wsfan $(B)/bench/loadgen
	bench/smoke.sh

# bench-deflate: fan-out with and without permessage-deflate in one sitting
# (bench/deflate.py): CPU, instructions (callgrind) and bytes per delivery.
.PHONY: bench-deflate
bench-deflate: $(B)/wsfan $(B)/bench/loadgen
	bench/deflate.py
	bench/deflate.py --callgrind --subs 500 --rate 20 --seconds 3 --repeats 1

# bench-scale: 100,000 connections held across 6 wsfan nodes sharing one
# Redis and 6 load generator processes, one message to everyone; memory per
# connection, delivery time to the last one, Redis load (bench/scale.py,
# about 2 minutes; its section of docs/benchmarks.md is kept by make bench).
.PHONY: bench-scale
bench-scale: $(B)/wsfan $(B)/bench/loadgen
	bench/scale.py

# bench-tls: the fan-out ladder over wss:// against ws://, one sitting (bench/tls.sh).
.PHONY: bench-tls
bench-tls: $(B)/wsfan $(B)/bench/loadgen
	bench/tls.sh

# bench-map [MAP_BEFORE=<revision>]: map_get of this tree against the map.c
# of an older revision, timed and under callgrind (bench/map-compare.sh).
.PHONY: bench-map
bench-map:
	bench/map-compare.sh $(or $(MAP_BEFORE),f31fffa)

# bench-compare BEFORE=<old wsfan binary> [AFTER=<new one>, default build/wsfan]:
# bench/compare.sh, the callgrind step and the fan-out and rooms ladders of
# `make bench`, the two binaries alternated in one sitting (about 10 minutes).
.PHONY: bench-compare
bench-compare: $(B)/wsfan $(B)/bench/loadgen
	@test -n "$(BEFORE)" || { echo "usage: make bench-compare BEFORE=path/to/old/wsfan [AFTER=path/to/new/wsfan]" >&2; exit 2; }
	bench/compare.sh $(BEFORE) $(or $(AFTER),$(B)/wsfan)
