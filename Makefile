# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv when missing. torch and torchvision are installed as a matching pair first:
# a CPU-only torch wheel with the registry's CUDA torchvision fails at import (ENVIRONMENT notes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
FASHION_MNIST := /usr/share/datasets/fashion-mnist
# AlbumentationsX (the maintained albumentations, AGPL-3.0) goes into its own folder, never into .venv: the
# adapter's tests run a second time against it (tests/test_albumentationsx.py). --no-deps: everything else it
# needs (numpy, scipy, pydantic, opencv, stringzilla) is in .venv already.
ALBX := .albumentationsx
ALBX_SPEC ?= albumentationsx==2.5.1 albucore==0.2.21 numkong==7.8.6

.PHONY: demo test install albumentationsx fashion-mnist clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $@

# The main job on the embedded default data: fit a VAE on scikit-learn's digits, save, describe,
# export it to ONNX (verified against torch, generation speed of both backends), write a preview,
# pre-generate 4 variants of every training image to disk with the ONNX backend and verify the set,
# then train a small CNN with VAEAugment in a 2-worker DataLoader (variants/s and accuracy); last, a
# small run of the evaluation protocol (3 seeds, 20 images per class, 300 classifier steps; about a
# minute): artifacts/report holds report.json, report.md and gains.png (docs/figures.md reads them); then the
# imbalanced case (half of the classes at 5 images; balanced accuracy), where balancing with variants has paid:
# artifacts/report-imbalanced. Each ends with one line on what its numbers mean.
# One thread there: these models are too small to gain from two, and on a busy 2-core machine two
# threads took 188 s where one took 18 s (2 seeds, 200 steps); this run took 58 s there.
demo: install
	mkdir -p artifacts
	$(BIN)/vaeaug fit --data digits --conditional --epochs 20 --out artifacts/digits.vae --force --curves artifacts/curves.png
	$(BIN)/vaeaug info artifacts/digits.vae
	$(BIN)/vaeaug export artifacts/digits.vae --out artifacts/digits.onnx --force --speed
	$(BIN)/vaeaug preview --model artifacts/digits.vae --data digits --split test --out artifacts/preview.png --force
	rm -rf artifacts/digits-generated
	$(BIN)/vaeaug generate --model artifacts/digits.onnx --data digits --out artifacts/digits-generated --variants 4 --workers 2
	$(BIN)/vaeaug verify artifacts/digits-generated
	$(BIN)/python examples/train_classifier_digits.py --model artifacts/digits.vae --onnx artifacts/digits.onnx --steps 600
	OMP_NUM_THREADS=1 $(BIN)/vaeaug evaluate --data digits --per-class 20 --seeds 3 --steps 300 --vae-epochs 100 \
		--out artifacts/report
	OMP_NUM_THREADS=1 $(BIN)/vaeaug evaluate --data digits --per-class 20 --imbalance 4 --seeds 3 --steps 300 \
		--vae-epochs 100 --arms none,oversample,oversample+classic,balance+vae --out artifacts/report-imbalanced

# The whole test suite. Fashion-MNIST comes from Debian's dataset-fashion-mnist package.
test: install fashion-mnist albumentationsx
	$(BIN)/python -m pytest -q

albumentationsx: $(ALBX)/.installed

$(ALBX)/.installed: $(VENV)/.installed Makefile
	rm -rf $(ALBX)
	$(BIN)/python -m pip install -q --no-deps --target $(ALBX) $(ALBX_SPEC)
	touch $@

fashion-mnist:
	@if [ -d "$(FASHION_MNIST)" ] || [ -n "$$VAEAUG_FASHION_MNIST" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian package dataset-fashion-mnist"; \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
		echo "warning: Fashion-MNIST not found; run 'sudo apt-get install dataset-fashion-mnist' or set VAEAUG_FASHION_MNIST to a folder holding its IDX files"; \
	fi

clean:
	rm -rf $(VENV) $(ALBX) artifacts .pytest_cache *.egg-info
