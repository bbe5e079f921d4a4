# The two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
ENV_DIR = $(shell scripts/engines-env.sh)
PYTHON = $(ENV_DIR)/bin/python

.PHONY: build deps engines editor-merge test go-test py-test fuzz bench demo gpu-check gpu-check-prepare clean

build:
	$(GO) build -o bin/gpu-worker ./cmd/gpu-worker
	$(GO) build -o bin/demo ./cmd/demo

deps:
	scripts/install-deps.sh

engines: deps
	@scripts/engines-env.sh >/dev/null

# The Codex editor's merge (third_party/codex-editor) bundled with esbuild
# from npm, cached outside the checkout; codex/editormerge's tests run it.
editor-merge: deps
	@scripts/editor-merge-env.sh >/dev/null

# The engines' schema the worker embeds (contract/schema.json): run after
# changing an engine's configuration; the contract tests check it is current.
schema: engines
	cd engines && $(PYTHON) -m gpuworker_engines schema > ../contract/schema.json.tmp && mv ../contract/schema.json.tmp ../contract/schema.json

# Everything: Go (unit, emulator, end-to-end with real engines) and Python.
test: deps engines editor-merge build
	GPU_WORKER_PYTHON=$(PYTHON) $(GO) test -count=1 -timeout 40m ./...
	$(MAKE) fuzz
	cd engines && $(PYTHON) -m pytest -q
	# the GPU check on the CPU at tiny sizes (its worker step is the quick demo)
	rm -rf gpu-check-out && scripts/gpu-check.sh --dry-run --out gpu-check-out

go-test: editor-merge build
	GPU_WORKER_PYTHON=$(PYTHON) $(GO) test -count=1 ./...

py-test:
	cd engines && $(PYTHON) -m pytest -q

# Short fuzzing runs of the parsers (longer runs: FUZZTIME=5m make fuzz). The
# default counts executions, not seconds: Go 1.26's coordinator can report its
# own -fuzztime deadline as a failure (go.dev/issue/75804, fixed in Go 1.27).
FUZZTIME ?= 50000x
fuzz:
	@for t in $$(grep -rl --include=*_test.go '^func Fuzz' . | xargs -r -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$t/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "fuzz $$t $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$t || exit 1; \
	  done; \
	done

# The demo: a local Codex project, an ASR and a TTS job, the worker, a summary.
DEMO_FLAGS ?=
demo: deps engines build
	GPU_WORKER_PYTHON=$(PYTHON) $(GO) run ./cmd/demo --dir demo-project --work-dir demo-work --worker bin/gpu-worker $(DEMO_FLAGS)

# The GPU check (see scripts/gpu_check.py): prepare here, run where the GPU is.
GPU_CHECK_OUT ?= gpu-check-out
gpu-check-prepare: deps engines
	scripts/gpu-check.sh --prepare

gpu-check: build
	scripts/gpu-check.sh --out $(GPU_CHECK_OUT)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin demo-project demo-work gpu-check-out .gpu-check
