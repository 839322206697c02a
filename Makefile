# kvod: `make run` serves a demo title, `make test` runs the whole suite.
# Debian's Python, always: a pyenv Python may be first on PATH.
PYTHON := /usr/bin/python3
KVOD := $(PYTHON) bin/kvod
DEMO_DIR := build/demo
DEMO := $(DEMO_DIR)/demo.ts
DEMO_CONFIG := $(DEMO_DIR)/kvod.toml
CSRC := $(wildcard rtpengine/csrc/*.c rtpengine/csrc/*.h) kernel/uapi/krtp.h
ENGINE_STAMP := build/.engine-stamp
PYTEST_ARGS ?=

.PHONY: all deps engine engine-build web run demo test test-fast test-asan bench clean fuzz

all: engine web

deps:
	@packaging/install-deps

# The one command that builds both cffi modules (rtpengine/_kvod_*.so);
# the Debian package build calls it too, through engine-build.
ENGINE_BUILD := $(PYTHON) -m rtpengine.csrc.build

# Both cffi modules, rebuilt when any C source, header or the build script changes.
$(ENGINE_STAMP): $(CSRC) rtpengine/csrc/build.py
	$(ENGINE_BUILD)
	@mkdir -p build && touch $@

engine: deps $(ENGINE_STAMP)

# The same without installing anything (debian/rules: build dependencies
# come from Build-Depends there).
engine-build:
	$(ENGINE_BUILD)

# hls.js for the player page, from the npm registry at build time (the
# version is pinned in packaging/web/package-lock.json), bundled into the
# static files the daemon serves: no CDN at run time.
WEB := packaging/web
HLSJS := appliance/http/static/vendor/hls.min.js
$(HLSJS): $(WEB)/package.json $(WEB)/package-lock.json
	@command -v npm >/dev/null || apt-get install -y -q --no-install-recommends npm
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error
	@mkdir -p $(dir $@)
	cp $(WEB)/node_modules/hls.js/dist/hls.min.js $@
	cp $(WEB)/node_modules/hls.js/LICENSE $(dir $@)hls.js.LICENSE

web: $(HLSJS)

# Three minutes of 720p H.264 + AAC in MPEG-TS, made once and kept.
$(DEMO):
	@mkdir -p $(DEMO_DIR)
	ffmpeg -nostdin -loglevel error -y \
		-f lavfi -i testsrc2=size=1280x720:rate=30 \
		-f lavfi -i "sine=frequency=440:sample_rate=48000:beep_factor=4" \
		-t 180 -c:v libx264 -preset veryfast -pix_fmt yuv420p \
		-g 60 -keyint_min 60 -sc_threshold 0 \
		-b:v 3M -maxrate 3M -bufsize 6M -c:a aac -b:a 128k \
		-f mpegts $(DEMO).tmp.ts
	mv $(DEMO).tmp.ts $(DEMO)

$(DEMO_CONFIG):
	@mkdir -p $(DEMO_DIR)
	printf '[cache]\ndir = "cache"\n\n[catalog]\npath = "catalog.db"\n' > $@

demo: engine $(DEMO) $(DEMO_CONFIG)
	@$(KVOD) --config $(DEMO_CONFIG) catalog show demo >/dev/null 2>&1 || \
		$(KVOD) --config $(DEMO_CONFIG) catalog add $(DEMO) --name demo

run: demo web
	@echo "serving rtsp://127.0.0.1:8554/demo (Ctrl-C stops); try: ffplay rtsp://127.0.0.1:8554/demo"
	$(KVOD) --config $(DEMO_CONFIG) serve

# the slowest tests are listed at the end, so a CI log shows where time goes
test: engine kernels web
	$(PYTHON) -m pytest -q -rxX --durations=15 $(PYTEST_ARGS) tests

# The C under AddressSanitizer/UBSan, built into build/asan (the normal
# modules stay as they are), then the engine and indexer tests against it.
ASAN_DIR := build/asan
test-asan: deps
	KVOD_EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" \
		KVOD_BUILD_DEST=$(ASAN_DIR) $(PYTHON) -m rtpengine.csrc.build
	KVOD_EXT_DIR=$(CURDIR)/$(ASAN_DIR) LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
		ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		$(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) \
		tests/test_engine.py tests/test_strategies.py tests/test_mpegts.py \
		tests/test_engine_growing.py tests/test_mpegts_growing.py tests/test_kernel_pacing.py \
		tests/test_mp4_index.py tests/test_engine_tcp.py \
		tests/test_hostile_files.py

# The long fuzz campaign: the RTSP message, Transport, Range, Session,
# RTP-Info, Authorization and RTCP parsers and the sans-IO RTSP server, at
# least FUZZ_INPUTS inputs, counted per target (tests/fuzz/run.py);
# `make test` runs it test-sized (tests/test_fuzz.py).
FUZZ_INPUTS ?= 1000000
fuzz: engine
	$(PYTHON) -m tests.fuzz.run --inputs $(FUZZ_INPUTS)

bench: engine
	$(KVOD) bench index
	$(KVOD) bench datapath --size 256MiB --payload 512,1024,1316 --sink nic --repeat 3
	$(KVOD) bench streams --sessions 1,10,100,1000
	# packets within 5 ms of their time both ways (the default burst sends up to 20 ms early)
	$(KVOD) bench streams --sessions 1000 --burst-ms 4
	$(KVOD) bench latency

clean:
	rm -rf build rtpengine/_kvod_*.so appliance/http/static/vendor $(WEB)/node_modules

# The krtp kernel module in Debian 12's and 13's kernels under QEMU (also in
# `make test`); kernel packages are fetched once into build/kernels.
.PHONY: kernels test-kernel bench-kernel
kernels: deps
	@packaging/fetch-kernels >/dev/null

test-kernel: engine kernels
	$(PYTHON) -m pytest -q $(PYTEST_ARGS) tests/test_krtp_abi.py tests/test_krtp_kernel.py

# kvod bench datapath inside each kernel's guest, krtp loaded (ratios only:
# software emulation distorts absolute figures)
bench-kernel: engine kernels
	$(PYTHON) -m tests.kernel.bench

# The Debian packages: build/deb/kvod_<version>_amd64.deb and
# build/deb/krtp-dkms_<version>_all.deb, built from a copy of the tree in
# build/deb-src (so the package build's clean and its compiler flags leave
# this tree's engine alone), with Debian's Python first on PATH.
DEB_VERSION := $(shell dpkg-parsechangelog -S Version 2>/dev/null)
DEB_SRC := build/deb-src/kvod-$(DEB_VERSION)
DEB_PATH := /usr/sbin:/usr/bin:/sbin:/bin
PACKAGE_DIR := build/package
.PHONY: deb package-files test-package

# hls.js is bundled before the copy (web): the package build does not
# reach the npm registry
deb: deps web
	rm -rf build/deb-src && mkdir -p $(DEB_SRC) build/deb
	tar -cf - --exclude=./build --exclude=./.git --exclude='*.so' --exclude='*.o' \
		--exclude=node_modules \
		--exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis . \
		| tar -xf - -C $(DEB_SRC)
	cd $(DEB_SRC) && env PATH=$(DEB_PATH) dpkg-buildpackage -us -uc -b
	rm -rf build/deb/*.deb build/deb/dbgsym
	mkdir -p build/deb/dbgsym && mv build/deb-src/*-dbgsym_*.deb build/deb/dbgsym/
	mv build/deb-src/*.deb build/deb-src/*.buildinfo build/deb-src/*.changes build/deb/
	@ls -l build/deb/*.deb

# What debian/rules installs besides the code: the man page from the click
# commands, the config file from appliance/config.py's definitions.
package-files:
	@mkdir -p $(PACKAGE_DIR)
	$(PYTHON) packaging/kvod-manpage $(DEB_VERSION) > $(PACKAGE_DIR)/kvod.1.tmp
	mv $(PACKAGE_DIR)/kvod.1.tmp $(PACKAGE_DIR)/kvod.1
	$(PYTHON) packaging/kvod-toml > $(PACKAGE_DIR)/kvod.toml.tmp
	$(PYTHON) packaging/kvod-toml --check $(PACKAGE_DIR)/kvod.toml.tmp
	mv $(PACKAGE_DIR)/kvod.toml.tmp $(PACKAGE_DIR)/kvod.toml

# Both packages, lintian, then install/upgrade/purge in a booted Debian 12
# container (systemd-nspawn; its root is cached under build/nspawn) and the
# DKMS source built for Debian 12's and 13's kernels (build/kernels).
# The measured figures land in build/package-figures.json.
test-package: engine deb kernels
	env PATH=$(DEB_PATH) lintian --fail-on error,warning --info build/deb/*.deb
	KVOD_PACKAGE_TESTS=1 $(PYTHON) -m pytest -q -rxX $(PYTEST_ARGS) tests/package
	@cat build/package-figures.json
