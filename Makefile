# tokensift: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
TORCH_VERSION := 2.13.0
# pytest workers for `make test` (2 cores on CI)
JOBS   ?= 2
# the install stamp is rebuilt whenever the dependency list changes
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-all test-slow test-icarus iverilog lint bench verilog clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned, so that no dependency range can ever pull a CUDA build
	@$(PY) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null \
		|| $(PIP) install -q "torch==$(TORCH_VERSION)"
	$(PIP) install -q -e ".[dev]"
	@$(VENV)/bin/tokensift doctor
	@touch $(STAMP)

demo: install
	$(VENV)/bin/tokensift demo

# the default suite: everything except the long sweeps (marker `slow`) and the Icarus runs (`test-icarus`)
test: install
	$(PY) -m pytest -m "not slow and not icarus" -n $(JOBS) --dist loadfile -q

# the cocotb testbenches marked `icarus` on Icarus Verilog, installed from Debian when missing (needs root)
test-icarus: install iverilog
	$(PY) -m pytest -m icarus -q

iverilog:
	@command -v iverilog >/dev/null || (apt-get update && apt-get install -y iverilog)

test-slow: install
	$(PY) -m pytest -m slow -q

test-all: install iverilog
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check tokensift sw quant hw sim tests bench

bench: install
	$(VENV)/bin/tokensift bench

verilog: install
	$(VENV)/bin/tokensift generate attention --n-max 197 --head-dim 64 --lanes 16 --out build/verilog/attention
	$(VENV)/bin/tokensift generate selector --n-max 197 --dim 384 --lanes 16 --out build/verilog/selector

clean:
	rm -rf build .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
