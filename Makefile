# The two commands of the README's quick start. Each creates .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch 2.14.1 + torchvision 0.29.1 is the pair that gives timm a working torchvision here.
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1

.PHONY: run test fuzz venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PAIR)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/vitdeploy build --model swin_t --fp16 -o build/swin_t

# Two pytest workers, whole files per worker (module fixtures build once), one torch/OpenMP thread each:
# on the 2-core CI machine this takes the suite from ~15.5 to ~10 min (oversubscribed threads cost more
# than they give). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile tests

# Rewrite fuzz suite: random small models through every pass, compared with PyTorch (see benchmarks/fuzz/run.py).
CASES ?= 200
SEED ?= 0
fuzz: $(STAMP)
	$(PY) benchmarks/fuzz/run.py --cases $(CASES) --seed $(SEED) --out benchmarks/results/rewrite_fuzz.json

clean:
	rm -rf build .pytest_cache
