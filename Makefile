# scene_reloc: `make demo` and `make test` are all a newcomer needs; both set up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
DEMO_DIR ?= out/demo

.PHONY: setup test lint demo bench bench-synthetic bench-node check-bags corpus corpus-real bench-fewshot bench-fewshot-real bench-retrieval-real \
	bench-throughput gpu-kit shipped-weights retrieval-models retrieval-weights bench-retrieval bench-site \
	bench-reliability bench-sld-ablation bench-speed bench-node-real bench-teach-bag clean help

help:
	@echo "make setup   - create $(VENV) with the pinned dependencies (idempotent)"
	@echo "make test    - set up if needed, run the whole test suite (lint included)"
	@echo "make demo    - set up if needed, synthetic scene -> memorize -> evaluate -> report"
	@echo "make bench   - the real-data benchmark (needs DATA=... WEIGHTS=..., see README)"
	@echo "make bench-sld-ablation - what each part of the landmark detector is worth (dev-20)"
	@echo "make bench-node - the node under a 640x480 30 Hz camera for 5 minutes"
	@echo "make bench-speed - query stages and speed settings, memorize times (dev-20, ~8 min)"
	@echo "make bench-node-real - the node on real frames with ALIKE-n (after bench-speed)"
	@echo "make bench-teach-bag - teaching from robot recordings: EuRoC, a distorted kitchen bag, TUM (DATA_ROOT)"
	@echo "make bench-reliability - fuzzing, damaged maps, 200 lifecycle cycles, 10-minute soak"
	@echo "make check-bags - read the real ROS 2 bags (BAGS=...)"
	@echo "make bench-fewshot - corpus, pretraining, meta-training, few-shot curves (~1 h)"
	@echo "make bench-fewshot-real - leave-one-real-scene-out pretraining, meta-training, few-shot (~1.5 h)"
	@echo "make gpu-kit - frames, weights and wheels a lent GPU machine needs for bench/gpu_check.sh"
	@echo "make bench-throughput - pretraining throughput on 1 and 2 processes"
	@echo "make shipped-weights - re-make training/pretrained/ (the shipped meta-learned start)"
	@echo "make retrieval-models - train the retrieval variants (SARE NetVLAD, GeM, ...) on the corpus"
	@echo "make bench-retrieval - retrieval recall +-VOP and latency vs database size (DATA_ROOT)"
	@echo "make bench-retrieval-real - retrieval trained with each real scene held out (~25 min)"
	@echo "make bench-site - a site of four real maps: selection, none-of-them, recall (DATA_ROOT)"

setup: $(STAMP)

# torch is pinned in the same install as everything else, so no package can pull CUDA wheels.
$(STAMP): requirements.txt requirements-ros.txt setup.py package.xml tools/setup_ros.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	bash tools/setup_ros.sh $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

test: setup
	$(PY) -m pytest test

lint: setup
	$(VENV)/bin/ruff check .

demo: setup
	$(PY) bench/demo.py --out $(DEMO_DIR)

DATA ?= ../shared/data/7scenes_redkitchen_dev
WEIGHTS ?= ../shared/weights
bench: setup
	$(PY) bench/bench_dev.py --data $(DATA) --weights $(WEIGHTS) --out out/bench

bench-speed: setup
	$(PY) bench/bench_query_speed.py --data $(DATA) --weights $(WEIGHTS) --out out/query_speed

# What a lent GPU machine needs for bench/gpu_check.sh (the device tool; see README "GPU").
gpu-kit: setup
	sh bench/gpu_kit.sh $(DATA) $(WEIGHTS) gpu_kit

bench-node-real: setup
	$(PY) bench/bench_node.py --map out/query_speed/dev-20-region.map --data $(DATA) \
		--frames 15:700:10 --duration 120

bench-teach-bag: setup
	$(PY) bench/bench_teach_bag.py --data $(DATA_ROOT) --weights $(WEIGHTS) --out out/teach_bag

bench-sld-ablation: setup
	$(PY) bench/bench_sld_ablation.py --data $(DATA) --weights $(WEIGHTS) --out out/sld_ablation

bench-synthetic: setup
	$(PY) bench/bench_dev.py --synthetic-only --out out/bench

bench-node: setup
	$(PY) bench/bench_node.py --duration 300

bench-reliability: setup
	$(PY) bench/bench_reliability.py --out out/reliability

BAGS ?= ../shared/data/bags
check-bags: setup
	$(PY) bench/check_real_bags.py --bags $(BAGS)

CLI := $(VENV)/bin/scene-reloc
CORPUS := out/corpus/corpus.json
corpus: setup
	test -f $(CORPUS) || $(CLI) make-corpus --out out/corpus --scenes 60 --seed 0

bench-fewshot: corpus
	$(CLI) pretrain --corpus $(CORPUS) --out out/pt_alike --init $(WEIGHTS)/alike-n.pth \
	    --iterations 2000 --lr-backbone 1e-4 --val-every 1000 --device cpu \
	    --detector-weight 0 --descriptor-weight 0 --early-lr-scale 1
	$(PY) bench/bench_fewshot.py --corpus $(CORPUS) --pretrained out/pt_alike/backbone.pth \
	    --weights $(WEIGHTS) --data $(DATA) --out out/fewshot

# Leave-one-real-scene-out: the synthetic corpus (linked) plus the real scenes of DATA_ROOT.
CORPUS_REAL := out/corpus_real
REAL_SCENES := 7scenes_redkitchen_dev sun3d_studyroom_f1 tabletop_rgbd 7scenes_stairs_sample
HELD_OUT := 7scenes_redkitchen_dev sun3d_studyroom_f1 tabletop_rgbd
# Pretraining from ALIKE-n that keeps its detector and keypoint descriptors (issue 16).
PRETRAIN_KEEP := --init $(WEIGHTS)/alike-n.pth --iterations 2000 --lr-backbone 1e-4 \
    --heads region --val-every 0 --detector-weight 1 --descriptor-weight 1 --early-lr-scale 0.1
corpus-real: corpus
	test -f $(CORPUS_REAL)/corpus.json || { mkdir -p $(CORPUS_REAL) && \
	    ln -s $(abspath out/corpus)/synthetic-* $(CORPUS_REAL)/ && cp $(CORPUS) $(CORPUS_REAL)/ && \
	    $(CLI) make-corpus --out $(CORPUS_REAL) --add $(addprefix $(DATA_ROOT)/,$(REAL_SCENES)); }

bench-fewshot-real: corpus-real
	for s in $(HELD_OUT); do test -f out/pt_real/without-$$s/backbone.pth || \
	    $(CLI) pretrain --corpus $(CORPUS_REAL)/corpus.json --hold-out $$s $(PRETRAIN_KEEP) \
	    --out out/pt_real/without-$$s --quiet || exit 1; done
	$(PY) bench/bench_fewshot.py --corpus $(CORPUS_REAL)/corpus.json --backbones alike,pretrained \
	    --pretrained 'out/pt_real/without-{held_out}/backbone.pth' \
	    --weights $(WEIGHTS) --data $(DATA_ROOT)/7scenes_redkitchen_dev --real-data $(DATA_ROOT) \
	    --leave-one-out --out out/fewshot_loo

bench-throughput: corpus
	$(PY) bench/bench_pretrain_throughput.py --corpus $(CORPUS) --out out/throughput

# The shipped start: Reptile on the synthetic corpus (seed 0) for ALIKE-n's released weights.
# See training/pretrained/README.md.
shipped-weights: corpus
	$(CLI) meta-train --corpus $(CORPUS) --backbone alike-n --backbone-weights \
	    $(WEIGHTS)/alike-n.pth --out training/pretrained/meta-alike-n.safetensors \
	    --device cpu --outer-steps 200 --inner-steps 100

# Retrieval: the variants bench-retrieval compares; the first one is what ships
# (training/pretrained/retrieval-alike-n.safetensors, see training/pretrained/README.md).
DATA_ROOT ?= ../shared/data
RETRIEVAL := out/retrieval
TRAIN_RETRIEVAL := $(CLI) train-retrieval --corpus $(CORPUS) --backbone alike-n \
	--backbone-weights $(WEIGHTS)/alike-n.pth --device cpu
retrieval-models: corpus
	mkdir -p $(RETRIEVAL)
	$(TRAIN_RETRIEVAL) --out $(RETRIEVAL)/sare-netvlad.safetensors
	$(TRAIN_RETRIEVAL) --steps 0 --patch-steps 0 --out $(RETRIEVAL)/vlad-untrained.safetensors
	$(TRAIN_RETRIEVAL) --aggregator gem --dim 64 --out $(RETRIEVAL)/sare-gem.safetensors
	$(TRAIN_RETRIEVAL) --positional --out $(RETRIEVAL)/sare-netvlad-pos.safetensors
	$(TRAIN_RETRIEVAL) --loss joint --out $(RETRIEVAL)/sare-netvlad-joint.safetensors

bench-retrieval: setup
	$(PY) bench/bench_retrieval.py --data $(DATA_ROOT) --corpus $(CORPUS) --weights $(WEIGHTS) \
	    --scaling --out out/retrieval_bench --models \
	    "vlad (untrained)=$(RETRIEVAL)/vlad-untrained.safetensors" \
	    "sare-gem=$(RETRIEVAL)/sare-gem.safetensors" \
	    "sare-netvlad=$(RETRIEVAL)/sare-netvlad.safetensors" \
	    "sare-netvlad joint=$(RETRIEVAL)/sare-netvlad-joint.safetensors" \
	    "sare-netvlad +pos=$(RETRIEVAL)/sare-netvlad-pos.safetensors"

# Retrieval trained with each real scene held out (the synthetic corpus + the other three real
# scenes), each judged on its held-out scene's queries ("Each query scene alone" table).
bench-retrieval-real: corpus-real
	mkdir -p out/retrieval_loo
	for s in $(REAL_SCENES); do test -f out/retrieval_loo/without-$$s.safetensors || \
	    $(CLI) train-retrieval --corpus $(CORPUS_REAL)/corpus.json --hold-out $$s --backbone \
	    alike-n --backbone-weights $(WEIGHTS)/alike-n.pth --device cpu --quiet \
	    --out out/retrieval_loo/without-$$s.safetensors || exit 1; done
	$(PY) bench/bench_retrieval.py --data $(DATA_ROOT) --weights $(WEIGHTS) \
	    --out out/retrieval_loo_bench --models \
	    "shipped (synthetic only)=training/pretrained/retrieval-alike-n.safetensors" \
	    $(foreach s,$(REAL_SCENES),"without $(s)=out/retrieval_loo/without-$(s).safetensors")

bench-site: setup
	$(PY) bench/bench_site.py --data $(DATA_ROOT) --weights $(WEIGHTS) --out out/site

retrieval-weights: corpus
	$(TRAIN_RETRIEVAL) --half --out training/pretrained/retrieval-alike-n.safetensors

clean:
	rm -rf out build *.egg-info .pytest_cache
