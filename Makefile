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

.PHONY: install demo test test-all test-slow test-accel test-icarus iverilog lint bench verilog clean wheel-smoke

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

# the default suite: everything except the long sweeps (marker `slow`) and the Icarus runs (`test-icarus`),
# then the wheel as a user gets it; a test still running after 15 minutes fails (a hang must not eat CI)
test: install
	$(PY) -m pytest -m "not slow and not icarus" -n $(JOBS) --dist loadfile -q --timeout 900 --durations 15
	$(MAKE) --no-print-directory wheel-smoke

# build the wheel, install it (not editable) into a fresh venv and run the CLI there, outside the source
# tree: a package or data file missing from the wheel, or a run-time dependency missing from the main
# dependencies, fails here
WHEEL_DIR  := build/wheel
SMOKE_VENV := build/wheel-venv
wheel-smoke: install
	@# build/lib is setuptools' staging copy: a module deleted from the source would live on in it
	rm -rf $(WHEEL_DIR) $(SMOKE_VENV) build/lib build/bdist.*
	$(PIP) wheel -q --no-deps -w $(WHEEL_DIR) .
	$(PYTHON) -m venv $(SMOKE_VENV)
	@# torch as hard links to the main venv's files (the same pinned wheel, no second GB on disk), or installed
	$(PY) .ci/link_dist.py torch $(SMOKE_VENV)/bin/python \
		|| $(SMOKE_VENV)/bin/python -m pip --disable-pip-version-check install -q --no-cache-dir "torch==$(TORCH_VERSION)"
	$(SMOKE_VENV)/bin/python -m pip --disable-pip-version-check install -q --no-cache-dir \
		"torch==$(TORCH_VERSION)" $(WHEEL_DIR)/tokensift-*.whl
	cd $(SMOKE_VENV) && env -u PYTHONPATH bin/tokensift doctor \
		&& env -u PYTHONPATH bin/tokensift generate requant --shift 12 --out smoke/requant \
		&& env -u PYTHONPATH bin/tokensift simulate requant --count 50 --build-dir smoke/sim --json \
		&& env -u PYTHONPATH bin/tokensift co-opt --target-fps 1000 --keep-step 0.2 --no-progress --json >/dev/null \
		&& env -u PYTHONPATH bin/tokensift estimate --device zcu102 --json >/dev/null
	@# the smoke venv has done its job; its packages would otherwise sit on disk until the next run
	rm -rf $(SMOKE_VENV) build/lib build/bdist.*
	@echo "wheel smoke test passed"

# the cocotb testbenches marked `icarus` on Icarus Verilog, installed from Debian when missing (needs root)
test-icarus: install iverilog
	$(PY) -m pytest -m icarus -q

iverilog:
	@command -v iverilog >/dev/null || (apt-get update && apt-get install -y iverilog)

test-slow: install
	$(PY) -m pytest -m slow -q

# the whole-model accelerator in Verilator (one design, every method, bit-exact, cycles = the cost model)
test-accel: install
	$(PY) -m pytest -m slow -q tests/sim/test_accel_model_sim.py tests/tokensift/test_demo.py::test_quick_demo_runs_the_whole_accelerator

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
	rm -rf build *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
