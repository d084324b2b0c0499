# Every target bootstraps .venv when it is missing, so a fresh clone needs only `make demo` / `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Two stamps: the demos need only the package; the tests add the `test` extra (Playwright, pycocotools).
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo detect-demo test test-all bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install -q torch torchvision
	$(PY) -m pip install -q -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[test]"
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(VENV)/bin/ganforge train default --data mnist5k --out runs/demo --force --device cpu

# The detector on its offline data: yolov1-s, the `adam` recipe, a short budget on the CPU.
detect-demo: $(STAMP)
	$(VENV)/bin/ganforge detect train adam --data digits-det --out runs/detect-demo --epochs 2 --force device=cpu

test: $(TEST_STAMP)
	$(VENV)/bin/pytest -n 2 --timeout 600 --durations 25

test-all: $(TEST_STAMP)
	$(VENV)/bin/pytest -n 2 -m "slow or not slow"

bench: $(STAMP)
	$(PY) bench/speed.py --recipe tf-dcgan-mnist --device cpu --steps 20

clean:
	rm -rf runs $(VENV)
