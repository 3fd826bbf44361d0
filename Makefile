# The two commands of the README:
#   make run   set-up, build, then the main job: chat with the SmolLM2 teacher, then upcycle it into the
#              6MLA24GDN hybrid and print the upcycling report (ranks, errors, KV-memory table, KL)
#   make test  set-up, build, every CPU test (C++ unit tests, Python-oracle parity tests, sanitised
#              parser tests and bounded fuzzing)
PRESET ?= cpu-release
BUILD  := build/$(PRESET)
JOBS   ?= $(shell nproc)
SHELL  := /bin/bash
ENV    := source scripts/env.sh &&

.PHONY: setup configure build run test test-cpp test-sanitize fuzz bench clean upcycle-demo train-demo

setup:
	@bash scripts/setup.sh

configure: setup
	@$(ENV) cmake --preset $(PRESET) >/dev/null

build: configure
	@$(ENV) cmake --build $(BUILD) -j $(JOBS)
	@mkdir -p build/bin && ln -sf ../$(PRESET)/bin/hylo build/bin/hylo

run: build
	@echo "== the teacher (SmolLM2-135M-Instruct, Q4_1 GGUF) answers =="
	@$(ENV) build/bin/hylo generate "$$HYLO_TEACHER_GGUF" --chat --greedy \
	  --prompt "What is the capital of France? Answer in one sentence." --max-new-tokens 48
	@echo "== upcycling it into a hybrid (recipes/plans/smollm2-135m-6mla24gdn.yaml) =="
	@$(MAKE) --no-print-directory upcycle-demo
	@echo "== distilling the hybrid from the teacher on the CPU (recipes/train/smollm2-135m-6mla24gdn-cpu-demo.yaml) =="
	@$(MAKE) --no-print-directory train-demo

# Upcycles the SmolLM2 teacher into the 6MLA24GDN hybrid (recipes/plans/) and prints the report: per-layer
# mixers, ranks and reconstruction errors, the KV-memory table against the teacher, the KL right after init.
UPCYCLE_DEMO_OUT ?= build/upcycle-demo/smollm2-135m-6mla24gdn
upcycle-demo: build
	@$(ENV) build/bin/hylo upcycle "$$HYLO_TEACHER_GGUF" --plan recipes/plans/smollm2-135m-6mla24gdn.yaml \
	  --out $(UPCYCLE_DEMO_OUT) --json $(UPCYCLE_DEMO_OUT).report.json --threads 1 \
	  --calibration "$$HYLO_DATA/text/moby-dick.txt"

# A short CPU distillation (KD) of the upcycle demo's hybrid: Moby-Dick tokenized by `hylo data` (chapters 1-31
# held out), 20 steps of 4 x 64 tokens, held-out loss every 5 steps (metrics.jsonl, loss.svg beside the run).
TRAIN_DEMO_OUT ?= build/train-demo
train-demo: build
	@$(ENV) build/bin/hylo data --tokenizer "$$HYLO_TEACHER_GGUF" --out $(TRAIN_DEMO_OUT)/data --paragraphs \
	  "$$HYLO_DATA/text/moby-dick.txt" --heldout-lines "$$HYLO_DATA/text/moby-dick.txt:1-4830" --seed 0 && \
	  rm -rf $(TRAIN_DEMO_OUT)/run && \
	  HYLO_DEMO_STUDENT=$(abspath $(UPCYCLE_DEMO_OUT)) HYLO_DEMO_DATA=$(abspath $(TRAIN_DEMO_OUT)/data) \
	  build/bin/hylo train --recipe recipes/train/smollm2-135m-6mla24gdn-cpu-demo.yaml --out $(TRAIN_DEMO_OUT)/run && \
	  echo "held-out KL (nats/token) by step, from $(TRAIN_DEMO_OUT)/run/kd/metrics.jsonl:" && \
	  grep heldout_loss $(TRAIN_DEMO_OUT)/run/kd/metrics.jsonl && echo "curve: $(TRAIN_DEMO_OUT)/run/kd/loss.svg"

test: build
	@$(ENV) cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900
	@$(MAKE) --no-print-directory test-sanitize fuzz

# Parsers (io/, tokenizer, config) under ASan+UBSan, built without libtorch.
test-sanitize: setup
	@$(ENV) cmake --preset asan >/dev/null && cmake --build build/asan -j $(JOBS) && \
	  cd build/asan && ctest --output-on-failure -j $(JOBS)

# Each libFuzzer target runs for a bounded time over the checked-in seed corpus.
FUZZ_SECONDS ?= 20
fuzz: setup
	@$(ENV) cmake --preset fuzz >/dev/null && cmake --build build/fuzz -j $(JOBS) && \
	  bash scripts/run_fuzzers.sh build/fuzz $(FUZZ_SECONDS)

clean:
	rm -rf build
