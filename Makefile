# portier: top-level build. `make` builds into build/, `make run` and `make test` are what a newcomer runs.
#
# Libraries come through pkg-config, expanded lazily (`=`) inside recipes only, so that `make run` and
# `make test` on a fresh machine can install them (scripts/deps.sh) before anything asks pkg-config.

BUILD    ?= build
CC       ?= cc
CFLAGS   ?= -O2 -g
WARNINGS := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror -Wshadow \
            -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla -Wimplicit-fallthrough -fno-common
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
ifeq ($(SAN),1)
CFLAGS   := -O1 -g $(SAN_FLAGS)
LDFLAGS  += $(SAN_FLAGS)
endif

PKGS     := libevent libevent_openssl libevent_pthreads openssl yaml-0.1 jansson
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config $(PKG_STATIC) --libs $(PKGS)) -lhttp_parser -lpthread
# STATIC=1 links every library statically (Debian ships the .a files in the -dev packages): the
# binaries that `make images` packs into images holding nothing else.
ifeq ($(STATIC),1)
PKG_STATIC := --static
LDFLAGS    += -static
endif
CMOCKA     = $(shell pkg-config --cflags --libs cmocka)
INCLUDES   := -Ilib -Iapps/lib -Iproxy/src
ALL_CFLAGS = $(WARNINGS) $(CFLAGS) $(PKG_CFLAGS) $(INCLUDES) -MMD -MP

ifeq ($(V),1)
Q :=
else
Q := @
endif

# Code the apps and portier share (addresses, the bounded writer) belongs to neither: lib/.
SHARED_SRC  := $(wildcard lib/*.c)
SHARED_OBJ  := $(SHARED_SRC:%.c=$(BUILD)/%.o)
SHAREDLIB   := $(BUILD)/lib/libshared.a

# The apps: a shared library of server code and one directory per app.
APPS        := app1 app2 app3
APPLIB_SRC  := $(wildcard apps/lib/*.c)
APPLIB_OBJ  := $(APPLIB_SRC:%.c=$(BUILD)/%.o)
APPLIB      := $(BUILD)/apps/libapp.a
APP_BINS    := $(APPS:%=$(BUILD)/%)

# portier: every module but main.c goes into a static library, so unit tests link just what they use.
PROXY_SRC   := $(filter-out proxy/src/main.c,$(wildcard proxy/src/*.c))
PROXY_OBJ   := $(PROXY_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/status_html.o
PROXYLIB    := $(BUILD)/proxy/libportier.a
PORTIER     := $(if $(wildcard proxy/src/main.c),$(BUILD)/portier)

UNIT_SRC    := $(wildcard tests/unit/test_*.c)
UNIT_BINS   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

PYTEST      := /usr/bin/python3 -m pytest

.PHONY: all help deps run certs check test unit integration bench-smoke k8s-test fuzz fuzz-regress \
        asan fmt fmt-check lint compdb bench images up down deploy clean
.DEFAULT_GOAL := all
.SECONDARY:

# Each target's line in `make help` is the `## ` comment after its name.
all: $(APP_BINS) $(PORTIER) $(UNIT_BINS) ## build the apps, portier and the unit tests into build/

help: ## list the targets, one line each
	$(Q)awk -F':.*## ' '/^[a-z][a-z0-9-]*:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## install the Debian packages that building, testing and linting need (apt, sudo if not root)
	$(Q)scripts/deps.sh

# The targets below install what is missing first, then re-enter make, so that pkg-config is only
# asked once the packages are there.
DEPS = scripts/deps.sh --check 2>/dev/null || scripts/deps.sh
BUILD_DEPS = scripts/deps.sh --build --check 2>/dev/null || scripts/deps.sh --build

# The local CA and HTTPS certificate: made on the first `make run`, kept after (config/local.yaml
# names them). Always build/certs, whatever BUILD is.
CERTS := build/certs

run: ## the whole system on loopback: the apps, portier on 127.0.0.1:8080 and :8443; Ctrl-C stops it
	$(Q)$(BUILD_DEPS)
	$(Q)$(MAKE) --no-print-directory all
	$(Q)scripts/certs.sh $(CERTS)
	$(Q)scripts/run.sh $(BUILD)

certs: ## (re)make the local CA and the HTTPS certificate under build/certs
	$(Q)$(BUILD_DEPS)
	$(Q)scripts/certs.sh --force $(CERTS)

check: ## the contributor's loop: build, unit tests, black-box tests (no sanitizers, k8s, bench or fuzz)
	$(Q)$(DEPS)
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(MAKE) --no-print-directory unit integration

test: ## the full gate CI runs: check, the bench smoke, k8s checks, fuzz corpora, then ASan+UBSan
	$(Q)$(DEPS)
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(MAKE) --no-print-directory unit integration bench-smoke k8s-test fuzz-regress
	$(Q)echo "== the same again under ASan+UBSan =="
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/asan SAN=1 all
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/asan SAN=1 unit integration bench-smoke

# stdbuf keeps cmocka's stdout and stderr lines in order; its preload is harmless to ASan.
unit: $(UNIT_BINS) ## run the cmocka unit tests
	$(Q)set -e; for t in $(UNIT_BINS); do echo "== $$t"; \
		ASAN_OPTIONS=verify_asan_link_order=0 stdbuf -oL -eL $$t; done

BENCH_SMOKE := tests/integration/test_bench_smoke.py

integration: $(APP_BINS) $(PORTIER) ## run the black-box tests: the real binaries on loopback
	$(Q)PORTIER_BUILD=$(abspath $(BUILD)) $(PYTEST) -q -p no:cacheprovider tests/integration \
		--ignore=$(BENCH_SMOKE)

bench-smoke: $(APP_BINS) $(PORTIER) ## run bench/run.sh for one short round, so that it cannot rot
	$(Q)PORTIER_BUILD=$(abspath $(BUILD)) $(PYTEST) -q -p no:cacheprovider $(BENCH_SMOKE)

# The cluster side, offline: manifests rendered and schema-checked, the images built the way the VM
# provision builds them and run in chroots, shellcheck, vagrant validate. Once, not again under ASan.
k8s-test: $(PORTIER) ## check k8s/, the images and vagrant/ offline
	$(Q)PORTIER_BUILD=$(abspath $(BUILD)) $(PYTEST) -q -p no:cacheprovider tests/k8s

# Images for k3s, no Docker: static binaries in $(K8S_BUILD), one archive per image in $(IMAGES),
# tagged with portier's version. Needs root (umoci keeps owners; portier's binary gets a capability).
# The linker's warnings about getaddrinfo and dlopen in static programs are expected: portier
# resolves with libevent's own DNS client and loads no OpenSSL modules.
K8S_BUILD ?= $(BUILD)/static
IMAGES    ?= build/images
VERSION    = $(shell sed -n 's/^\#define PORTIER_VERSION "\(.*\)"$$/\1/p' proxy/src/main.c)

images: ## static binaries packed into image archives for k3s, in build/images (needs root)
	$(Q)$(MAKE) --no-print-directory BUILD=$(K8S_BUILD) STATIC=1 $(APPS:%=$(K8S_BUILD)/%) $(K8S_BUILD)/portier
	$(Q)k8s/build-images.sh $(K8S_BUILD) $(IMAGES) $(VERSION)

# The p2 VM (vagrant/Vagrantfile; VAGRANT_DEFAULT_PROVIDER=libvirt for libvirt). up checks the
# host (vagrant/check-host.sh: Vagrant's and the hypervisor's versions), then boots and provisions
# it; deploy sends the working tree, rebuilds and imports the images, rolls the pods. Both make the
# VM's CA and HTTPS certificate in $(VM_CERTS) unless they are there (kept across down and up, never
# sent to git; a certificate of one's own put there is kept too). The first up fixes the VM's
# settings (P2_LOGIN, P2_WORKERS, the provider...) in vagrant/.p2-settings, which deploy, down and
# every vagrant command in vagrant/ then read; down destroys every machine they define, then deletes
# the file, so that the next up reads the environment again.
VM_CERTS := vagrant/certs
VM_SETTINGS := $(or $(P2_SETTINGS_FILE),vagrant/.p2-settings)

up: ## boot and provision the p2 VM (Vagrant) at 192.168.56.110
	$(Q)vagrant/check-host.sh
	$(Q)scripts/certs.sh $(VM_CERTS)
	$(Q)cd vagrant && vagrant up

down: ## destroy the p2 VM (and its agents) and forget its settings
	$(Q)cd vagrant && vagrant destroy -f
	$(Q)rm -f $(VM_SETTINGS)

deploy: ## send the tree to the VM, rebuild and import the images, roll the pods
	$(Q)scripts/certs.sh $(VM_CERTS)
	$(Q)cd vagrant && vagrant rsync && vagrant provision --provision-with images && \
		vagrant provision --provision-with deploy

asan: ## build everything under ASan+UBSan into build/asan
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/asan SAN=1 all

# libFuzzer harnesses (tests/fuzz/fuzz_*.c), each over its committed seed corpus in
# tests/fuzz/corpus/; what they find goes to $(BUILD)/fuzz, never into the corpus by itself.
FUZZ_SECONDS ?= 60
fuzz: ## fuzz every harness for FUZZ_SECONDS (default 60) each, starting from its seed corpus
	$(Q)$(DEPS)
	$(Q)FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh $(BUILD)/fuzz

fuzz-regress: ## run every fuzz harness over its seed corpus, then fuzz each for a few seconds
	$(Q)tests/fuzz/run.sh --regress $(BUILD)/fuzz

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

# The admin listener's status page, built into portier as a C array (scripts/embed.sh).
$(BUILD)/gen/status_html.c: proxy/admin/status.html scripts/embed.sh
	@mkdir -p $(dir $@)
	$(Q)scripts/embed.sh admin_status_html $< >$@.tmp && mv $@.tmp $@

$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(APPLIB): $(APPLIB_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(PROXYLIB): $(PROXY_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(SHAREDLIB): $(SHARED_OBJ)
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

# Each app is its main.c on top of the shared library.
$(BUILD)/app%: $(BUILD)/apps/app%/main.o $(APPLIB) $(SHAREDLIB)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/portier: $(BUILD)/proxy/src/main.o $(PROXYLIB) $(SHAREDLIB)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/tests/test_%: $(BUILD)/tests/unit/test_%.o $(PROXYLIB) $(APPLIB) $(SHAREDLIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(CMOCKA) $(PKG_LIBS)

$(BUILD)/tests/unit/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) $(shell pkg-config --cflags cmocka) -c -o $@ $<

C_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)

fmt: ## reformat every C file with clang-format
	$(Q)$(DEPS)
	$(Q)clang-format -i $(C_FILES)

fmt-check: ## fail if any C file is not as clang-format would write it
	$(Q)$(DEPS)
	$(Q)clang-format --dry-run -Werror $(C_FILES)

# lint: cppcheck, then clang-tidy (checks, and why each left-out one is out, in .clang-tidy) on
# every tracked C file, unit tests and fuzz harnesses included; any finding fails. cppcheck leaves
# out variableScope (declarations at the top of a block are house style) and, in log.c and
# bufpool.c only, unusedStructMember (cppcheck 2.10 misses the uses of a _Thread_local struct's
# members).
# clang-tidy runs one process per file, LINT_JOBS at a time: given several files, clang-tidy 14
# stops seeing va_start after the first and reports va_lists as uninitialised that are not
# (llvm/llvm-project#40656). Every file gets the root .clang-tidy, wherever it lies. A file's
# findings print in one piece once it is done; xargs fails if any file failed, not only the last.
LINT_JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
LINT_SRC    = $(filter %.c,$(C_FILES))
LINT_CFLAGS = $(WARNINGS) $(PKG_CFLAGS) $(INCLUDES) $(shell pkg-config --cflags cmocka)

# cppcheck reads no system header by itself; jansson's iteration macros must be known to it.
JANSSON_H := /usr/include/jansson.h
lint: ## cppcheck and clang-tidy (.clang-tidy) on every tracked C file; any finding fails
	$(Q)$(DEPS)
	$(Q)cppcheck --quiet --error-exitcode=1 --inline-suppr --enable=warning,style,performance,portability \
		--suppress=missingIncludeSystem --suppress=variableScope --include=$(JANSSON_H) \
		--suppress=unusedStructMember:proxy/src/log.c --suppress=unusedStructMember:proxy/src/bufpool.c \
		$(INCLUDES) $(LINT_SRC)
	$(Q)printf '%s\n' $(LINT_SRC) | xargs -P$(LINT_JOBS) -I{} sh -c \
		'out=$$(clang-tidy --quiet --config-file=.clang-tidy "$$1" -- $(LINT_CFLAGS) 2>&1) || \
		{ printf "%s\n" "$$out" | grep -Ev "^[0-9]+ warnings? (generated|treated as errors)"; exit 1; }' \
		sh {} || { echo "lint: clang-tidy findings above" >&2; exit 1; }

compdb: ## write compile_commands.json (bear) for editors and clang-tidy
	$(Q)bear -- $(MAKE) -B all

bench: ## portier beside nginx and HAProxy; a report and charts in bench/results/ (run.sh alone ~50 min)
	$(Q)$(DEPS)
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD=$(BUILD) bench/apps.sh
	$(Q)BUILD=$(BUILD) bench/run.sh

clean: ## remove build/
	$(Q)rm -rf $(BUILD)

-include $(shell find $(BUILD) -path $(BUILD)/tools -prune -o -name '*.d' -type f -print 2>/dev/null)
