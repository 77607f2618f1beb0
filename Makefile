# cellzoo: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test bench docs bento wheel clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/zoo segment samples/demo.tif --channels 0,1 --out out/demo --overlay
	@echo "wrote out/demo/demo_masks.tif and out/demo/demo_overlay.png"

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/bench_flows.py
	$(BIN)/python bench/bench_predict.py
	$(BIN)/python docs/render.py

docs: install
	$(BIN)/python docs/render.py

wheel: install
	rm -rf dist && $(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist . && rm -rf build

bento: wheel
	$(BIN)/bentoml build

clean:
	rm -rf out .pytest_cache
