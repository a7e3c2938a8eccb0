# One command each, on a fresh machine with Python 3.11: `make demo` and `make test`.
# The venv is (re)installed when pyproject.toml or constraints.txt change; constraints.txt pins every
# package exactly (torch and torchvision come from this machine's disk, see README).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: install demo paper test test-fast lint bench clean-demo

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	PATH=$(BIN):$$PATH dvc repro
	@echo "Headline figures: dvc metrics show (docs/review.md); the tables beside the papers: metrics/report.md"

# The papers' setting in one command: `make paper COCO=/data/coco` (COCO 2014 + Karpathy's dataset_coco.json in
# that folder; SD 1.4 and 2.1 under models/; the six backbones' weights in the caches: README "The paper's setting in
# one command"). The pipeline's first stage, check, lists everything missing in one message before anything long runs;
# a run that fails before any stage ran leaves the workspace as it was, one that fails later keeps params.yaml in the
# paper's setting so that `make paper` again resumes (scripts/exp_run.sh).
# GPUS=4 runs generate and code_train under `accelerate launch` on 4 GPUs.
COCO ?= coco
GPUS ?= 1
LAUNCHER := $(if $(filter 1,$(GPUS)),python,accelerate launch --multi_gpu --num_processes $(GPUS))
PAPER := -S clusters.source=coco -S clusters.input=$(COCO) -S 'clusters.coco_captions=annotations/captions_*2014.json' \
	-S clusters.karpathy_split=$(COCO)/dataset_coco.json \
	-S clusters.images=$(COCO) -S 'generate.generators=[sd14,sd21]' -S 'children.sets=[sd14,sd21]' -S generate.shard_size=256 \
	-S model.backbone=clip_vitb32_openai -S 'model.generators=[sd14,sd21]' \
	-S 'embed.backbones=[resnet50_imagenet,vitb32_imagenet,clip_rn50_openai,openclip_vitb32_laion400m,openclip_vitb32_laion2b]' \
	-S embed.jpeg_decode=full \
	-S probe.protocol=raw -S probe.c_min=0.000001 -S probe.c_max=1000000.0 -S probe.c_steps=96 \
	-S disentangle.epochs=25 \
	-S 'code_train.data.generators=[sd14,sd21]' -S code_train.image_size=224 -S code_train.local_size=96 \
	-S code_train.epochs=150 -S code_train.batch_size=256 -S code_train.warmup_epochs=5 \
	-S code_train.probe_images=9600 \
	-S 'code_eval.data.generators=[sd14,sd21]' -S 'code_eval.data.fit=[sd14,sd21]'

# runtime settings (speed, not results) are environment variables, not params: README "Runtime settings"
paper: install
	PATH=$(BIN):$$PATH PARENTAGE_GENERATE_LAUNCHER='$(LAUNCHER)' PARENTAGE_CODE_TRAIN_LAUNCHER='$(LAUNCHER)' \
	PARENTAGE_CODE_TRAIN_WORKERS=8 PARENTAGE_CODE_TRAIN_THREADS=0 scripts/exp_run.sh $(PAPER)

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check stages tests benchmarks

# every benchmark, each figure printed beside its goal, in under 10 minutes on 2 CPU cores (sizes trimmed to fit:
# medians of 3 throughout; 2 images of the SD-shaped generator, the study at 2% of COCOFake, the import at 128
# children); each benchmark's wall time is printed after it. The draft-decoding cosine (a figure, not a timing,
# about a minute): benchmarks/draft_cosine.py
BENCHES := bench_embed.py bench_detect.py bench_code_train.py "bench_generate.py --sd-images 2" \
	"bench_study.py --scale 0.02" "bench_import.py --children 128"
bench: install
	@for b in $(BENCHES); do start=$$(date +%s); $(BIN)/python benchmarks/$$b || exit 1; \
		echo "-- $$b: $$(( $$(date +%s) - start )) s"; done
