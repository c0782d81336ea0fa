# sgpu — GNU make build.  `make run` and `make test` are the two commands a
# user needs; both install missing Debian packages first (scripts/deps.sh).
#
# Layout-driven: every src/<component>/*.c is compiled; the file holding
# main() is src/<component>/main.c.  Unit tests are tests/<dir>/test_*.c
# (cmocka), each linked with libsgpu.a and its component's objects (minus
# main.o).  Integration tests are tests/**/*_test.py and tests/**/*_test.sh,
# run by scripts/run-tests.sh against the binaries in $(BIN).

SHELL := /bin/bash

# Two levels.  The outer level (this block) installs what is missing first and then builds in
# a sub-make: pkg-config (below) must run after scripts/deps.sh installed pkg-config and the -dev
# packages, and nothing may compile while they are being installed (make -j).  `make test`,
# `make run`, `make bench`, `make sanitize` and `make deps` install (with sudo when not root);
# `make lint` installs only clang-format and cppcheck; a plain `make` installs only as root,
# otherwise it names what to install and stops.  Every other goal (a file, unit, clean,
# install...) goes straight to the inner level.
ifndef SGPU_INNER
.PHONY: all deps test run bench sanitize lint
all:
	@./scripts/deps.sh --no-sudo
	@$(MAKE) --no-print-directory SGPU_INNER=1 all
deps:
	@./scripts/deps.sh
test run bench sanitize:
	@./scripts/deps.sh
	@$(MAKE) --no-print-directory SGPU_INNER=1 $@
lint:
	@./scripts/deps.sh --lint
	@$(MAKE) --no-print-directory SGPU_INNER=1 $@
Makefile: ;
.DEFAULT:
	@$(MAKE) --no-print-directory SGPU_INNER=1 $@
else
CC ?= cc
BUILD ?= build
BIN ?= bin
PREFIX ?= /usr/local
SAN ?= 0

PKGS := libevent libevent_openssl libevent_pthreads json-c libcrypto libssl sqlite3
# Evaluated lazily, once, on first use (the inner level runs after scripts/deps.sh installed
# pkg-config and the -dev packages; a goal that compiles nothing never runs pkg-config).
lazy_pkg = $(eval $(1) := $$(shell pkg-config $(2) 2>/dev/null))$($(1))
PKG_CFLAGS = $(call lazy_pkg,PKG_CFLAGS,--cflags $(PKGS))
PKG_LIBS = $(call lazy_pkg,PKG_LIBS,--libs $(PKGS))
CMOCKA_LIBS = $(call lazy_pkg,CMOCKA_LIBS,--libs cmocka)

OPT ?= -O2
CFLAGS_BASE = -std=c17 -g $(OPT) -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
  -D_GNU_SOURCE -pthread -Isrc -Isrc/common $(PKG_CFLAGS)
ifeq ($(SAN),1)
CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
CFLAGS += $(CFLAGS_BASE)
LDLIBS = $(PKG_LIBS) -lm -pthread

# Model compute kernels get more optimisation (see docs/design.md).
MODEL_OPT ?= -O3 -ffp-contract=fast

# component dir -> program name
PROG_worker := sgpu-worker
PROG_model  := sgpu-model
PROG_engine := sgpu-engine
PROG_launch := sgpu-launch
PROG_cli    := sgpu
PROG_gateway := sgpu-gateway

COMPONENTS := $(sort $(foreach d,worker model engine launch cli gateway,$(if $(wildcard src/$(d)/main.c),$(d))))

COMMON_SRC := $(wildcard src/common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
LIBSGPU := $(BUILD)/libsgpu.a

comp_src = $(wildcard src/$(1)/*.c src/$(1)/*/*.c)
comp_obj = $(patsubst %.c,$(BUILD)/%.o,$(call comp_src,$(1)))
comp_lib_obj = $(filter-out $(BUILD)/src/$(1)/main.o,$(call comp_obj,$(1)))

PROGRAMS := $(foreach c,$(COMPONENTS),$(BIN)/$(PROG_$(c)))

# Test programs and fixtures written in C (tests/fixtures/*.c, one program each).
FIXTURE_SRC := $(wildcard tests/fixtures/*.c)
FIXTURES := $(patsubst tests/fixtures/%.c,$(BIN)/fixtures/%,$(FIXTURE_SRC))

UNIT_SRC := $(wildcard tests/common/test_*.c $(foreach c,$(COMPONENTS),tests/$(c)/test_*.c))
UNIT_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: all deps run test unit sanitize bench lint format install clean
# keep object files of test programs (they are intermediates of pattern rules)
.SECONDARY:
all: $(PROGRAMS) $(FIXTURES)

deps:
	@./scripts/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/src/model/%.o: src/model/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(MODEL_OPT) -MMD -MP -c $< -o $@

# Unicode tables of the tokenizers, generated from Debian's unicode-data
# package into the build directory (src/model/unicode.c includes them).
UNICODE_DIR ?= /usr/share/unicode
# (the outer level installed unicode-data before this runs)
$(BUILD)/gen/unicode_tables.inc: scripts/gen-unicode-tables.py $(wildcard $(UNICODE_DIR)/UnicodeData.txt $(UNICODE_DIR)/PropList.txt)
	@mkdir -p $(dir $@)
	python3 scripts/gen-unicode-tables.py $(UNICODE_DIR) > $@.tmp && mv $@.tmp $@
$(BUILD)/src/model/unicode.o: $(BUILD)/gen/unicode_tables.inc
$(BUILD)/src/model/unicode.o: CFLAGS += -I$(BUILD)/gen

# The dashboard's static files (src/engine/ui/), embedded in sgpu-engine as C arrays
# (src/engine/dash.c includes them; docs/engine.md "Dashboard").
UI_FILES := $(wildcard src/engine/ui/*)
$(BUILD)/gen/ui_assets.inc: scripts/gen-ui-assets.py $(UI_FILES)
	@mkdir -p $(dir $@)
	python3 scripts/gen-ui-assets.py src/engine/ui > $@.tmp && mv $@.tmp $@
$(BUILD)/src/engine/dash.o: $(BUILD)/gen/ui_assets.inc
$(BUILD)/src/engine/dash.o: CFLAGS += -I$(BUILD)/gen

$(LIBSGPU): $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

define prog_rule
$(BIN)/$(PROG_$(1)): $(call comp_obj,$(1)) $(LIBSGPU)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $$@ $(call comp_obj,$(1)) $(LIBSGPU) $(LDLIBS)
endef
$(foreach c,$(COMPONENTS),$(eval $(call prog_rule,$(c))))

$(BIN)/fixtures/%: $(BUILD)/tests/fixtures/%.o $(LIBSGPU)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(LIBSGPU) $(LDLIBS)

# unit test binaries: tests/<dir>/test_x.c links <dir>'s component objects
define unit_rule
$(BUILD)/tests/$(1)/%: $(BUILD)/tests/$(1)/%.o $(if $(filter common,$(1)),,$(call comp_lib_obj,$(1))) $(LIBSGPU)
	@mkdir -p $$(dir $$@)
	$(CC) $(LDFLAGS) -o $$@ $$^ $(CMOCKA_LIBS) $(LDLIBS)
endef
$(foreach d,common $(COMPONENTS),$(eval $(call unit_rule,$(d))))

unit: $(UNIT_BIN)

test: all unit
	@SGPU_BIN=$(abspath $(BIN)) SGPU_BUILD=$(abspath $(BUILD)) ./scripts/run-tests.sh $(UNIT_BIN)

# ASan + UBSan build of everything, then the whole suite against it.
sanitize:
	$(MAKE) SAN=1 OPT=-O1 BUILD=build/san BIN=build/san/bin test

bench: all
	@SGPU_BIN=$(abspath $(BIN)) ./scripts/run-bench.sh

run: all
	@SGPU_BIN=$(abspath $(BIN)) ./scripts/run-demo.sh

lint:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability \
	  --inline-suppr --suppress=missingIncludeSystem -Isrc -Isrc/common src

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/

clean:
	rm -rf build bin

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

endif # SGPU_INNER
