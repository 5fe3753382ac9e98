# Thin wrappers; the work is done by the Swift tools (hcos, os-agent) and their tests.
SWIFT      ?= swift
OUT        ?= build/out
TEST_OUT   ?= build/test-image
BIN        := .build/release
export HCOS_CACHE ?= $(HOME)/.cache/hcos

.PHONY: all setup binaries image demo test unit-test system-test bench lint clean

all: binaries

setup:
	./scripts/setup

# hcos (build host) and os-agent (goes into the image) are statically linked against the Swift
# runtime: the image has no Swift libraries of its own.
binaries:
	$(SWIFT) build -c release --static-swift-stdlib --product os-agent
	$(SWIFT) build -c release --static-swift-stdlib --product hcos

image: setup binaries
	$(BIN)/hcos build --output $(OUT)

# The main job: build the default image, boot it in qemu, print its report, shut it down.
demo: image
	$(BIN)/hcos vm $(OUT)/hcos-1.0.0.img --disk-size 4G --wait-ready --report

# Unit tests, then system tests that boot real images in qemu (the image is built once and
# cached under $(TEST_OUT); the Debian downloads under $(HCOS_CACHE)).
test: setup binaries
	test -f build/test-signing.key || $(BIN)/hcos keygen --output build/test-signing
	$(BIN)/hcos build --output $(TEST_OUT) --no-qcow2 --sign build/test-signing.key
	HCOS_TEST_IMAGE=$(TEST_OUT)/hcos-1.0.0.img HCOS_TEST_KEY=build/test-signing \
		$(SWIFT) test --no-parallel

unit-test:
	$(SWIFT) test --skip SystemTests

bench: setup binaries
	$(SWIFT) build -c release --static-swift-stdlib --product hcos-bench
	$(BIN)/hcos-bench --output build/bench

lint:
	$(SWIFT) format lint --recursive --strict Sources Tests

clean:
	rm -rf build .build
