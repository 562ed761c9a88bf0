# meg_lightning: every target installs what it needs first (a .venv in this folder).
# Variables: MODEL (mini: the trained offline model shipped in the package, the default | tiny: random
# weights, for plumbing only | paper | sd15-random | hub id | folder), N (prompts), FC (compression
# rate), ARGS (extra key=value).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.14.1 / torchvision 0.29.1 install from local disk on the project machines; on a GPU
# machine pick the build you need, e.g. TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
MODEL ?= mini
N ?= 64
TEST_WORKERS ?= 2
# FC is also make's built-in Fortran compiler variable: replace that default only
ifeq ($(origin FC),default)
FC := 0.5
endif
ARGS ?=
COMMON = model=$(MODEL) data.num_prompts=$(N) $(ARGS)
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup latents train-codec train-codec-adaptive pretrained-codecs train-ppo eval eval-channels eval-multiuser train-alloc figures demo test test-slow bench clean train-mini rehearsal

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: MODEL=$(MODEL) N=$(N) FC=$(FC) ARGS='key=value ...' (see: $(BIN)/meg <command> --help)"

setup: $(STAMP) ## create .venv and install the package (+ test extras)

# Byte-code is compiled by compileall, not by pip: pip compiles on one core, compileall on all
# (docs/BENCHMARKS.md). Not compiled: subtrees of the installed packages that nothing here imports
# (tests, pip itself, the model zoo of transformers and diffusers but CLIP and Stable Diffusion,
# ...); a module imported anyway only compiles when first imported, as without compileall.
NO_COMPILE = /(tests?|pip|setuptools|networkx|coreweave_evaluations|aiohttp|numpy/distutils|sympy/physics|opentelemetry/semconv|transformers/models/(?!(auto|clip)/)|diffusers/(modular_pipelines|pipelines/(?!stable_diffusion/)[^/]+/)|torch/_inductor/(codegen|kernel|fx_passes)|huggingface_hub/inference|wandb/integration)/
COMPILE = $(BIN)/python -m compileall -qq -j 0 -x '$(NO_COMPILE)'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile $(TORCH_SPEC)
	@# torch and its dependencies compile while pip fetches the rest (mostly a wait on the
	@# network); then the rest. compileall's exit status is 1 for the few files in the wheels
	@# that are not Python 3.
	$(COMPILE) $$(ls -d $(VENV)/lib/python*/site-packages/*/) > /dev/null 2>&1 & \
	  $(BIN)/python -m pip install -q --no-compile -e ".[dev]"; s=$$?; wait; exit $$s
	$(COMPILE) $(VENV)/lib > /dev/null || true
	@touch $@

latents: setup ## cache SD latents (default MODEL=mini N=64): make latents N=256
	$(BIN)/meg latents $(COMMON)

train-codec: setup ## train the codec through the channel (default MODEL=mini): make train-codec FC=0.5
	$(BIN)/meg train-codec codec.fc=$(FC) $(COMMON)

# The adaptive codec recipe (docs/CODECS.md; the same list as meg_lightning.recipe.RECIPE): one model
# per rate for -12..26 dB, AWGN and Rayleigh block fading (4 blocks, CSI at the decoder), each
# sample's MSE relative to the linear code's at its SNR, cosine LR over 300 epochs,
# gradient norm clipped at 1, early stopping.
ADAPTIVE_ARGS = codec.arch=adaptive codec.loss=linear_ratio codec.val_loss=linear_ratio \
	codec.lr=1e-3 codec.schedule=cosine codec.val_snrs_db=[-10,0,10,20] \
	codec.early_stop_patience=150 channel.kind=rayleigh channel.num_blocks=4 \
	channel.train_snr_db=[-12,26] codec.awgn_fraction=0.5 data.batch_size=64 trainer.max_epochs=300 \
	trainer.gradient_clip_val=1.0

# its conv width per rate (meg_lightning.recipe.recipe_width): 64 up to fc 0.5, 128 above
ADAPTIVE_WIDTH = $(shell awk 'BEGIN { print ($(FC) + 0 <= 0.5 + 1e-9) ? 64 : 128 }')

train-codec-adaptive: setup ## train the SNR-adaptive codec: make train-codec-adaptive MODEL=mini N=900 FC=0.25
	$(BIN)/meg train-codec codec.fc=$(FC) $(ADAPTIVE_ARGS) codec.adaptive.width=$(ADAPTIVE_WIDTH) $(COMMON)

pretrained-codecs: setup ## reproduce the shipped mini codecs (latents of 4 seeds x 810 captions, the adaptive recipe per fc; ~3 h on 2 cores); EXPORT=1 writes them into the package
	$(BIN)/meg pretrained-codecs recipe.export=$(if $(filter 1 true yes,$(EXPORT)),true,false) $(ARGS)

train-ppo: setup ## train the PPO power-allocation agent (default MODEL=mini)
	$(BIN)/meg train-ppo $(COMMON)

eval: setup ## PSNR/FID sweep over schemes x SNR x channel (resumable)
	$(BIN)/meg eval $(COMMON)

# The channel comparison (docs/CHANNELS.md): AWGN, Rayleigh block fading (one block per seed) and
# 3GPP TDL-C over OFDM (300 ns delay spread, 100 Hz Doppler at 3.5 GHz: 8.57 m/s; 64 subcarriers
# of 30 kHz, one gain per resource element) side by side, on the demo's mini latents (`meg latents`
# reuses a finished `make demo` cache; else it makes it, ~2 min) with the shipped meg-adaptive codecs.
CHANNELS_DATA = model=mini data.num_prompts=512 data.test_fraction=0.25 \
	data.cache_dir=data/demo/latents data.gen_batch_size=64
CHANNELS_ARGS = out_dir=data/channels logger=csv \
	eval.schemes=[centralized,feature,meg-adaptive,linear,digital] eval.fcs=[0.5] \
	eval.snrs_db=[-10,0,10,20] eval.channels=[awgn,rayleigh,tdl] eval.num_images=128 \
	eval.bootstrap=50 eval.pretrained=true channel.num_blocks=1 channel.equalizer=zf \
	channel.tdl.model=C channel.tdl.delay_spread_ns=300 channel.tdl.speed_mps=8.57 \
	channel.tdl.carrier_frequency_hz=3.5e9 channel.tdl.subcarrier_spacing_hz=30e3 \
	channel.tdl.num_subcarriers=64 channel.tdl.cyclic_prefix=4

eval-channels: setup ## AWGN vs Rayleigh vs 3GPP TDL sweep on the demo's mini latents -> data/channels (docs/CHANNELS.md)
	$(BIN)/meg latents $(CHANNELS_DATA) $(ARGS)
	$(BIN)/meg eval $(CHANNELS_DATA) $(CHANNELS_ARGS) $(ARGS)

# Users served per frame (docs/MULTIUSER.md): K in {1,2,4,8,16} users share the channel uses of one
# single-user transmission, TDMA against NOMA (simulated through the channel layer; add rayleigh or
# tdl to eval.channels for fading), on the demo's mini latents and AWGN, 64 test images per user,
# logged to one offline W&B run. meg-adaptive+dm
# adds ~4 min (it runs K <= 2: no mini codec below fc 0.25); feature+dm or linear+dm run every K,
# ~40 min each on 2 cores, estimated (ARGS="eval.schemes=[...]" to add them).
MULTIUSER_ARGS = out_dir=data/multiuser logger=wandb \
	eval.schemes=[centralized,feature,meg-adaptive,linear,digital,prompt,meg-adaptive+dm] \
	eval.fcs=[0.5] \
	eval.snrs_db=[0,10,20] eval.channels=[awgn] eval.num_images=64 eval.pretrained=true \
	channel.num_blocks=1 channel.equalizer=zf

eval-multiuser: setup ## users served per frame, K up to 16, TDMA vs NOMA, mini -> data/multiuser (docs/MULTIUSER.md)
	$(BIN)/meg latents $(CHANNELS_DATA) $(ARGS)
	$(BIN)/meg eval-multiuser $(CHANNELS_DATA) $(MULTIUSER_ARGS) $(ARGS)

# The learned allocation across users (docs/MULTIUSER.md): K = 4 users per frame, TDMA and NOMA,
# mean and max-min quality, PPO against equal shares, channel inversion and the best fixed split,
# on the spectrum of the demo's mini latents.
ALLOC_ARGS = out_dir=data/multiuser logger=csv users.k=4 ppo.lr=1e-3 ppo.frames_per_batch=4096 \
	ppo.minibatch_size=512

train-alloc: setup ## learn the allocation across K=4 users (PPO) vs equal / inversion / best fixed -> data/multiuser/alloc
	$(BIN)/meg latents $(CHANNELS_DATA) $(ARGS)
	$(BIN)/meg train-alloc $(CHANNELS_DATA) $(ALLOC_ARGS) $(ARGS)

figures: setup ## regenerate every figure from saved results
	$(BIN)/meg figures $(COMMON)

demo: setup ## every stage end to end, offline, on the CPU (mini model, ~8 min with the install)
	$(BIN)/meg demo $(ARGS)

test: setup ## the fast test suite (no network, CPU, < 10 min; TEST_WORKERS=2 processes)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

test-slow: setup ## the slow tests (real weights when present, long training checks)
	$(BIN)/python -m pytest -q -m slow

train-mini: setup ## train and save the shipped mini text-to-image model + classifier (~60 min on 2 idle CPU cores)
	$(BIN)/meg train-mini $(ARGS)

rehearsal: setup ## paper-scale dress rehearsal, every stage on sd15-random (CPU ~30 min, < 20 GiB)
	$(BIN)/meg rehearsal $(ARGS)

bench: setup ## the benchmarks under benchmarks/ (numbers go to docs/BENCHMARKS.md)
	$(BIN)/meg bench $(ARGS)

clean: ## remove caches, runs and the virtual environment
	rm -rf $(VENV) data/latents data/runs wandb lightning_logs .pytest_cache
