# Thin wrappers; the work is done by the Swift tools (hcos, os-agent) and their tests.
SWIFT      ?= swift
OUT        ?= build/out
TEST_OUT   ?= build/test-image
BIN        := .build/release
export HCOS_CACHE ?= $(HOME)/.cache/hcos

.PHONY: all setup binaries image image-v2 demo test unit-test system-test bench lint clean

all: binaries

setup:
	./scripts/setup

# hcos (build host) and os-agent (goes into the image) are statically linked against the Swift
# runtime: the image has no Swift libraries of its own.
binaries:
	$(SWIFT) build -c release --static-swift-stdlib --product os-agent
	$(SWIFT) build -c release --static-swift-stdlib --product hcos

# The image and its signed update bundle (the signing key is made once, under build/).
KEY ?= build/signing
image: setup binaries
	test -f $(KEY).key || $(BIN)/hcos keygen --output $(KEY)
	$(BIN)/hcos build --output $(OUT) --sign $(KEY).key

# v2 of the same image (same key): what the demo upgrades to.
image-v2: image
	$(BIN)/hcos build --output $(OUT) --sign $(KEY).key --set version=2.0.0 --no-qcow2

# The main job: build v1 and v2, boot v1 in qemu and print its report, upgrade it to v2
# through hcosctl inside the VM, show v2 committed, roll back to v1, shut down.
demo: image-v2
	$(BIN)/hcos demo $(OUT)/hcos-1.0.0.img --bundle $(OUT)/hcos-2.0.0.bundle --disk-size 4G

# Unit tests, then system tests that boot real images in qemu (the image is built once and
# cached under $(TEST_OUT); the Debian downloads under $(HCOS_CACHE)).
test: setup binaries
	test -f build/test-signing.key || $(BIN)/hcos keygen --output build/test-signing
	$(BIN)/hcos build --output $(TEST_OUT) --no-qcow2 --sign build/test-signing.key
	$(BIN)/hcos build --output $(TEST_OUT) --no-qcow2 --sign build/test-signing.key --set version=2.0.0
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
