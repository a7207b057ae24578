# rizzrun — the commands the README gives. `make install` creates .venv/ (editable install);
# every other target runs it first when .venv/ is missing.
PYTHON ?= python3
# The CPU build of torch; on a GPU machine: make install TORCH_SPEC='torch==2.13.0' with the
# CUDA index of your choice, or any torch in the range pyproject.toml allows.
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench repro repro-goldfish repro-mixers repro-ssmax repro-selective repro-fam repro-think repro-fp8 repro-preference repro-typical repro-opad repro-dds repro-pmpd repro-fast repro-grpo repro-rest repro-minillm repro-warp repro-score repro-bspo repro-paramdelta repro-regenesis repro-spar lint wheel-smoke clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rizzrun

# Two workers: most of the suite's time is real `rizzrun` processes (start-up, signals, resumes).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --out docs/benchmarks.md

# Each paper method's headline effect at CPU scale; numbers land in docs/results.md.
repro: repro-goldfish repro-mixers repro-ssmax repro-selective repro-fam repro-think repro-fp8 repro-preference repro-typical repro-opad repro-dds repro-pmpd repro-fast repro-grpo repro-rest repro-minillm repro-warp repro-score repro-bspo repro-paramdelta repro-regenesis repro-spar

repro-goldfish: $(STAMP)
	$(BIN)/python repro/goldfish.py

repro-mixers: $(STAMP)
	$(BIN)/python repro/mixers.py

repro-ssmax: $(STAMP)
	$(BIN)/python repro/ssmax.py

repro-selective: $(STAMP)
	$(BIN)/python repro/selective.py

repro-fam: $(STAMP)
	$(BIN)/python repro/fam.py

repro-think: $(STAMP)
	$(BIN)/python repro/think.py

repro-fp8: $(STAMP)
	$(BIN)/python repro/smooth_swiglu.py

repro-preference: $(STAMP)
	$(BIN)/python repro/preference.py

repro-typical: $(STAMP)
	$(BIN)/python repro/typical.py

repro-opad: $(STAMP)
	$(BIN)/python repro/opad.py

repro-dds: $(STAMP)
	$(BIN)/python repro/dds.py

repro-pmpd: $(STAMP)
	$(BIN)/python repro/pmpd.py

repro-fast: $(STAMP)
	$(BIN)/python repro/fast.py --record

repro-grpo: $(STAMP)
	$(BIN)/python repro/grpo.py

repro-rest: $(STAMP)
	$(BIN)/python repro/rest.py

repro-minillm: $(STAMP)  # reads repro-preference's sft_tiny runs when present
	$(BIN)/python repro/minillm.py

repro-score: $(STAMP)
	$(BIN)/python repro/score.py

repro-spar: $(STAMP)
	$(BIN)/python repro/spar.py

repro-regenesis: $(STAMP)
	$(BIN)/python repro/regenesis.py

repro-paramdelta: $(STAMP)
	$(BIN)/python repro/paramdelta.py

repro-bspo: $(STAMP)
	$(BIN)/python repro/bspo.py --seeds 0 1 2

repro-warp: $(STAMP)  # the replicates read repro-preference's sft_tiny runs
	$(BIN)/python repro/warp.py
	$(BIN)/python repro/warp.py --out outputs/repro/warp-beta1 --overrides objective.beta=1.0
	$(BIN)/python repro/warp.py --sft outputs/repro/preference/sft_tiny-s1 --seeds 2 3 --out outputs/repro/warp-sft1 --results outputs/repro/warp-sft1/results.md
	$(BIN)/python repro/warp.py --sft outputs/repro/preference/sft_tiny-s2 --seeds 4 5 --out outputs/repro/warp-sft2 --results outputs/repro/warp-sft2/results.md
	$(BIN)/python repro/warp_replicates.py outputs/repro/warp-sft1/results.md outputs/repro/warp-sft2/results.md

wheel-smoke: $(STAMP)
	bash tests/wheel_smoke.sh

lint: $(STAMP)
	$(BIN)/python -m compileall -q rizzrun tests benchmarks repro

clean:
	rm -rf $(VENV) build dist *.egg-info
