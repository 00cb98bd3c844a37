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

PKGS     := libevent libevent_openssl libevent_pthreads openssl yaml-0.1
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
PROXY_OBJ   := $(PROXY_SRC:%.c=$(BUILD)/%.o)
PROXYLIB    := $(BUILD)/proxy/libportier.a
PORTIER     := $(if $(wildcard proxy/src/main.c),$(BUILD)/portier)

UNIT_SRC    := $(wildcard tests/unit/test_*.c)
UNIT_BINS   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

PYTEST      := /usr/bin/python3 -m pytest

.PHONY: all deps run test test-build unit integration k8s-test asan fuzz fmt fmt-check lint compdb bench images \
        up down deploy clean
.DEFAULT_GOAL := all
.SECONDARY:

all: $(APP_BINS) $(PORTIER) $(UNIT_BINS)

deps:
	$(Q)scripts/deps.sh

# run and test install what is missing first, then re-enter make so pkg-config is asked afterwards.
run:
	$(Q)scripts/deps.sh --build --check 2>/dev/null || scripts/deps.sh --build
	$(Q)$(MAKE) --no-print-directory all
	$(Q)scripts/run.sh $(BUILD)

test:
	$(Q)scripts/deps.sh --check 2>/dev/null || scripts/deps.sh
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(MAKE) --no-print-directory unit integration
	$(Q)echo "== the same again under ASan+UBSan =="
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/asan SAN=1 all
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/asan SAN=1 unit integration

# stdbuf keeps cmocka's stdout and stderr lines in order; its preload is harmless to ASan.
unit: $(UNIT_BINS)
	$(Q)set -e; for t in $(UNIT_BINS); do echo "== $$t"; \
		ASAN_OPTIONS=verify_asan_link_order=0 stdbuf -oL -eL $$t; done

integration: $(APP_BINS) $(PORTIER)
	$(Q)PORTIER_BUILD=$(abspath $(BUILD)) $(PYTEST) -q -p no:cacheprovider tests/integration
	$(Q)$(if $(filter 1,$(SAN)),,$(MAKE) --no-print-directory k8s-test)

# The cluster side, offline: manifests rendered and schema-checked, the images built the way the VM
# provision builds them and run in chroots, shellcheck, vagrant validate. Once, not again under ASan.
k8s-test: $(PORTIER)
	$(Q)PORTIER_BUILD=$(abspath $(BUILD)) $(PYTEST) -q -p no:cacheprovider tests/k8s

# Images for k3s, no Docker: static binaries in $(K8S_BUILD), one archive per image in $(IMAGES),
# tagged with portier's version. Needs root (umoci keeps owners; portier's binary gets a capability).
# The linker's warnings about getaddrinfo and dlopen in static programs are expected: portier
# resolves with libevent's own DNS client and loads no OpenSSL modules.
K8S_BUILD ?= $(BUILD)/static
IMAGES    ?= build/images
VERSION    = $(shell sed -n 's/^\#define PORTIER_VERSION "\(.*\)"$$/\1/p' proxy/src/main.c)

images:
	$(Q)$(MAKE) --no-print-directory BUILD=$(K8S_BUILD) STATIC=1 $(APPS:%=$(K8S_BUILD)/%) $(K8S_BUILD)/portier
	$(Q)k8s/build-images.sh $(K8S_BUILD) $(IMAGES) $(VERSION)

# The p2 VM (vagrant/Vagrantfile; VAGRANT_DEFAULT_PROVIDER=libvirt for libvirt). up boots and
# provisions it; deploy sends the working tree, rebuilds and imports the images, rolls the pods.
up:
	$(Q)cd vagrant && vagrant up

down:
	$(Q)cd vagrant && vagrant destroy -f

deploy:
	$(Q)cd vagrant && vagrant rsync && vagrant provision --provision-with images && \
		vagrant provision --provision-with deploy

asan:
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/asan SAN=1 all

# libFuzzer on the HTTP parsers (needs clang: apt-get install clang); FUZZ_SECONDS per run.
FUZZ_SECONDS ?= 60
fuzz:
	$(Q)mkdir -p $(BUILD)/fuzz/corpus
	$(Q)clang -std=c11 -D_DEFAULT_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Ilib -Iproxy/src \
		tests/fuzz/fuzz_http.c proxy/src/http.c proxy/src/http_body.c lib/wbuf.c -lhttp_parser \
		-o $(BUILD)/fuzz/fuzz_http
	$(Q)$(BUILD)/fuzz/fuzz_http -max_total_time=$(FUZZ_SECONDS) $(BUILD)/fuzz/corpus

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
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

fmt:
	$(Q)clang-format -i $(C_FILES)

fmt-check:
	$(Q)clang-format --dry-run -Werror $(C_FILES)

lint:
	$(Q)cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
		--suppress=missingIncludeSystem $(INCLUDES) lib apps proxy tests/unit
	$(Q)clang-tidy --quiet $(filter %.c,$(C_FILES)) -- $(WARNINGS) $(PKG_CFLAGS) $(INCLUDES)

compdb:
	$(Q)bear -- $(MAKE) -B all

bench:
	$(Q)scripts/deps.sh --check 2>/dev/null || scripts/deps.sh
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD=$(BUILD) bench/apps.sh
	$(Q)BUILD=$(BUILD) bench/run.sh

clean:
	$(Q)rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
