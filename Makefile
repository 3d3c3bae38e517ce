# Two commands do all set-up on a fresh machine (Python 3.11 + the package registries):
#   make demo   compress + decompress a Kodak image with the shipped model, print bpp and the check
#   make test   run the test suite (what CI runs)
PY ?= .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: demo test lint venv figures eval train bench clean

$(VENV_STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# One pip call: torch pinned (constraints.txt) before lpips/torchvision resolve.
	$(PY) -m pip install -q -c constraints.txt -e ".[test,anchors]"
	touch $(VENV_STAMP)

venv: $(VENV_STAMP)

demo: $(VENV_STAMP)
	$(PY) -m hvq demo

test: $(VENV_STAMP)
	$(PY) -m ruff check hvq tests benchmarks
	$(PY) -m pytest tests
	$(PY) -m pytest --nbmake notebooks
	# Full mode too where it takes minutes, not hours (00 adds nothing new; 03 would train for hours):
	# the notebooks' claims (hvq.check) must hold on whole images as well as on the smoke crops.
	HVQ_SMOKE=0 $(PY) -m pytest --nbmake --nbmake-timeout=1200 notebooks/01_gaussian_to_index_probability.ipynb \
		notebooks/02_entropy_coding.ipynb notebooks/04_kodak_rd_curves.ipynb notebooks/05_rate_control.ipynb

lint: $(VENV_STAMP)
	$(PY) -m ruff check hvq tests benchmarks

bench: $(VENV_STAMP)
	$(PY) benchmarks/bench_coder.py

# The results CSV/JSON files (slow: about 30 min on 2 CPU cores), then every figure from them.
eval: $(VENV_STAMP)
	$(PY) -m hvq eval --dataset kodak --threads 1
	$(PY) benchmarks/rate_control_kodak.py

figures: $(VENV_STAMP)
	$(PY) -m hvq figures --dataset kodak
	$(PY) benchmarks/rate_control_kodak.py --from-csv

clean:
	rm -rf .venv .pytest_cache .ruff_cache
