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
PKG_LIBS   = $(shell pkg-config --libs $(PKGS)) -lhttp_parser -lpthread
CMOCKA     = $(shell pkg-config --cflags --libs cmocka)
ALL_CFLAGS = $(WARNINGS) $(CFLAGS) $(PKG_CFLAGS) -Iapps/lib -Iproxy/src -MMD -MP

ifeq ($(V),1)
Q :=
else
Q := @
endif

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

.PHONY: all deps run test test-build unit integration asan fmt fmt-check lint compdb bench images clean
.DEFAULT_GOAL := all
.SECONDARY:

all: $(APP_BINS) $(PORTIER) $(UNIT_BINS)

deps:
	$(Q)scripts/deps.sh

# run and test install what is missing first, then re-enter make so pkg-config is asked afterwards.
run:
	$(Q)scripts/deps.sh --check 2>/dev/null || scripts/deps.sh
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

asan:
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/asan SAN=1 all

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

# Each app is its main.c on top of the shared library.
$(BUILD)/app%: $(BUILD)/apps/app%/main.o $(APPLIB)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/portier: $(BUILD)/proxy/src/main.o $(PROXYLIB) $(APPLIB)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/tests/test_%: $(BUILD)/tests/unit/test_%.o $(PROXYLIB) $(APPLIB)
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
		--suppress=missingIncludeSystem -Iapps/lib -Iproxy/src apps proxy tests/unit
	$(Q)clang-tidy --quiet $(filter %.c,$(C_FILES)) -- $(WARNINGS) $(PKG_CFLAGS) -Iapps/lib -Iproxy/src

compdb:
	$(Q)bear -- $(MAKE) -B all

bench:
	$(Q)scripts/deps.sh --check 2>/dev/null || scripts/deps.sh
	$(Q)$(MAKE) --no-print-directory all
	$(Q)bench/apps.sh

clean:
	$(Q)rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
