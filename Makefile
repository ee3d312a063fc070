# The README's two commands: `make demo` (set up, train a poisoned Fashion-MNIST model on CPU, show the attack,
# flag 10% of the poisons and correct the model with `corrective fix`) and `make test` (set up, run the test
# suite). Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup demo test data benchmark clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch when none is installed: a bare `pip install torch` pulls a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,parquet]"
	touch $@

# Fashion-MNIST for the demo: Debian's dataset-fashion-mnist when apt is available and the files are missing.
data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ] || ls $${CORRECTIVE_DATA_DIR:-/nonexistent}/fashion-mnist/train-images-idx3-ubyte.gz >/dev/null 2>&1; then \
	  echo "Fashion-MNIST found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist', or add --download to the"; \
	  echo "corrective command to fetch it into ~/.cache/corrective-unlearning/data"; exit 1; \
	fi

DEMO_RUN := runs/train-fashion-mnist-small_cnn-poison-n600-seed0

demo: setup data
	$(BIN)/corrective train --config configs/demo.yaml --flag 0.1
	$(BIN)/corrective fix --model $(DEMO_RUN)/model.safetensors --data $(DEMO_RUN) --flagged $(DEMO_RUN)/flagged.txt \
	  --method auto --hparams '{rem: {steps: 200}}' --out runs/demo-fixed --force

test: setup
	$(BIN)/python -m pytest -q

benchmark: setup
	$(BIN)/python benchmarks/train_speed.py

clean:
	rm -rf $(VENV) runs results
