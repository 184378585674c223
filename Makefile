# rayscale — every target installs what it needs first.
SHELL := /bin/bash
comma := ,
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# kind: Kubernetes in Docker with KubeRay (needs docker, kind, kubectl, helm);
# PROVIDER=local needs only pip.
PROVIDER ?= kind
WORKERS ?= 2
# Passed to the job after `--`; override e.g. make submit JOB_ARGS="--data synthetic:rows=20000"
JOB_ARGS ?= --data synthetic:rows=5000,features=20,noise=1.0,seed=0 --num-samples 8 --max-rounds 200
DEMO_ARGS ?= --data synthetic:rows=40000,features=30,noise=1.0,seed=0 --num-samples 16 --max-rounds 300 --scheduler fifo --mode both --storage-path $(CURDIR)/results
STAMP := $(VENV)/.installed
# pip itself, pinned like everything else (a new pip can change how the lock installs).
PIP_VERSION := 26.3
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# The kit's image: tag = kit version, never latest.
IMAGE ?= rayscale:$(VERSION)
# The official Ray image; arm64 hosts (Apple Silicon, Graviton) get its aarch64 build.
ARCH_SUFFIX := $(if $(filter arm64 aarch64,$(shell uname -m)),-aarch64,)
BASE_IMAGE ?= rayproject/ray:2.60.0-py311-cpu$(ARCH_SUFFIX)
LOCAL_BASE ?= rayscale-base:bookworm
DOCKER ?= docker
# A folder of extra CA certificates (*.crt) to trust during the build, e.g. behind a
# TLS-intercepting proxy: make image CA_CERTS=/usr/local/share/ca-certificates
CA_CERTS ?=
# Another Ray release for the image (empty: the lock's); see ray-compat.
RAY_VERSION ?=

.PHONY: install lock cluster-up cluster-down submit demo test lint scan bench clean image image-base image-redis s3-venv mlflow-venv search-compare \
        k8s-manifests cluster-yamls eta ray-compat ray-compat-launcher e2e-kind k8s-build k8s-up k8s-down e2e-k8s image-onprem-host e2e-onprem probe chaos load storage-faults scale drills examples docs

install: $(STAMP)

# Everything (every extra), at the versions in requirements.lock. Reinstall only when the
# pins change; a second `make install` is a no-op.
EXTRAS := job,k8s,study,mlflow,test
# uv installs what pip would from the same lock, in seconds rather than minutes; its
# version is the lock extra's (pyproject.toml). UV_NATIVE_TLS: the system's CA store.
# --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set, every Ray process
# would otherwise compile Ray from source at each start (the tests ran 2.5 times slower).
UV_VERSION := $(shell sed -n 's/^ *"uv==\(.*\)",*$$/\1/p' pyproject.toml)
UV_INSTALL := UV_NATIVE_TLS=1 $(BIN)/uv pip install --quiet --compile-bytecode --python
$(STAMP): pyproject.toml requirements.lock requirements-bootstrap.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-bootstrap.txt
	$(UV_INSTALL) $(BIN)/python -c requirements.lock -e '.[$(EXTRAS)]'
	@touch $(STAMP)

# requirements.lock: every package of `make install`, exact, from pyproject.toml's ranges;
# job/requirements.txt, what the image installs, is the job's share of that lock;
# requirements-bootstrap.txt, pip and uv themselves. All committed, each archive's sha256
# with it: uv checks the hashes it is given, the image's pip requires them. uv keeps the
# versions already locked unless told UPGRADE=--upgrade, and reads the system's CA store
# (UV_NATIVE_TLS), where a TLS-intercepting proxy's CA is installed.
UPGRADE ?=
UV_COMPILE := UV_NATIVE_TLS=1 $(BIN)/uv pip compile --universal --python-version 3.11 --quiet --generate-hashes
lock: $(STAMP)
	printf 'pip==%s\nuv==%s\n' $(PIP_VERSION) $(UV_VERSION) | $(UV_COMPILE) - --no-annotate -o requirements-bootstrap.txt
	$(UV_COMPILE) pyproject.toml $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) $(UPGRADE) -o requirements.lock
	$(UV_COMPILE) pyproject.toml --extra job --extra mlflow -c requirements.lock --no-annotate -o job/requirements.txt

cluster-up: install
	$(BIN)/rayscale cluster up --provider $(PROVIDER) --workers $(WORKERS)

cluster-down: install
	$(BIN)/rayscale cluster down

submit: install
	$(BIN)/rayscale job submit -- $(JOB_ARGS)

# The main job: a 2-worker local cluster, the search with Ray and without, results in results/.
demo: install
	@mkdir -p results
	$(BIN)/rayscale cluster up --provider local --workers 2
	$(BIN)/rayscale job submit --save results/demo.json -- $(DEMO_ARGS); rc=$$?; \
	  $(BIN)/rayscale cluster down; exit $$rc

# The CLI reference, from the commands' own --help (a test checks it is current).
docs: install
	$(BIN)/python scripts/cli_reference.py

S3_VENV ?= .venv-s3
MLFLOW_VENV ?= .venv-mlflow
# Two lanes (pytest-xdist; a file's tests stay in one lane, in order): the suite mostly
# waits on Ray, Docker and the emulator, not on the CPU. Tests keep to their own state
# dirs, ports, Docker labels and TMPDIR, so lanes do not see each other's clusters.
test: install lint scan $(S3_VENV)/.installed $(MLFLOW_VENV)/.installed
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not drill and not example and not k8s_e2e" --durations=25

# The fault drills (a worker, the head or the storage lost mid-search; the KubeRay head
# killed under GCS fault tolerance; a worker that cannot start): real clusters, a minute
# each, outside make test.
drills: install $(S3_VENV)/.installed
	@if $(DOCKER) image inspect $(LOCAL_BASE) >/dev/null 2>&1 && \
	  ! $(DOCKER) image inspect $(REDIS_IMAGE) >/dev/null 2>&1; then $(MAKE) image-redis; fi
	RAYSCALE_REDIS_IMAGE=$(REDIS_IMAGE) $(BIN)/pytest -q -m drill

# The Ray wheel's Tune examples, unchanged, measured at 1 and 2 workers by `scaling
# --working-dir` and planned (a minute or more each), outside make test.
examples: install
	$(BIN)/pytest -q -m example

$(S3_VENV)/.installed: pyproject.toml $(STAMP)
	@test -x $(S3_VENV)/bin/python || $(PYTHON) -m venv $(S3_VENV)
	$(UV_INSTALL) $(S3_VENV)/bin/python $$($(PYTHON) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml","rb"))["project"]["optional-dependencies"]["s3test"]))')
	@touch $@

s3-venv: $(S3_VENV)/.installed

# A real MLflow tracking server for the --mlflow tests; the full server pulls pins of its
# own (pyarrow, python-dateutil), so it gets its own venv too.
$(MLFLOW_VENV)/.installed: pyproject.toml $(STAMP)
	@test -x $(MLFLOW_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW_VENV)
	$(UV_INSTALL) $(MLFLOW_VENV)/bin/python $$($(PYTHON) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml","rb"))["project"]["optional-dependencies"]["mlflowtest"]))')
	@touch $@

mlflow-venv: $(MLFLOW_VENV)/.installed

SCAN_VENV ?= .venv-scan
$(SCAN_VENV)/.installed: pyproject.toml $(STAMP)
	@test -x $(SCAN_VENV)/bin/python || $(PYTHON) -m venv $(SCAN_VENV)
	$(UV_INSTALL) $(SCAN_VENV)/bin/python $$($(PYTHON) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml","rb"))["project"]["optional-dependencies"]["scan"]))')
	@touch $@

# Security scans, offline (no guideline download); each skip is justified inline where it
# applies. checkov does not look inside custom resources, so the Ray pods that k8s/'s
# RayClusters and RayJobs make are written out as Pods and scanned too.
scan: $(SCAN_VENV)/.installed $(STAMP)
	$(SCAN_VENV)/bin/checkov --quiet --compact --skip-download --framework dockerfile -d docker
	@d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT \
	 && $(BIN)/python scripts/scan_pods.py k8s "$$d" \
	 && $(SCAN_VENV)/bin/checkov --quiet --compact --skip-download --framework kubernetes -d "$$d"

# k8s/ is generated from rayscale/manifests.py, and cluster/*.yaml's start commands from
# rayscale/runtime.py (the one place Ray's flags are written); tests check both.
k8s-manifests: $(STAMP)
	$(BIN)/python -c "from rayscale import manifests; print(*manifests.write_shipped('.'), sep='\n')"

cluster-yamls: $(STAMP)
	$(BIN)/python -c "from rayscale import runtime; print(*runtime.write_cluster_yamls('.'), sep='\n')"

# The real thing on Kubernetes, for machines with docker + kind + kubectl + helm: kind
# cluster up, the job, a scaling study at 1 and 2 workers, down. (kind's nodes cannot start here: docs/kubernetes.md; make e2e-k8s instead.)
e2e-kind: $(STAMP)
	scripts/e2e-kind.sh

# A real one-node Kubernetes on this machine (scripts/k8s/, docs/kubernetes.md): every
# component built from its Go module into ~/.cache/rayscale-k8s (about 17 min the first
# time on 2 cores, then cached by version), run as host processes; KubeRay's operator on it.
k8s-build:
	scripts/k8s/build.sh
k8s-up:
	scripts/k8s/up.sh
k8s-down:
	scripts/k8s/down.sh

# The kit's kuberay provider on that cluster, end to end: results/k8s-real/e2e.json; then
# the emulated end-to-end runs whose real counterparts those are (pytest marker k8s_e2e).
e2e-k8s: install
	@$(DOCKER) image inspect $(LOCAL_BASE) >/dev/null 2>&1 || $(MAKE) image-base
	@$(DOCKER) image inspect $(IMAGE) >/dev/null 2>&1 || $(MAKE) image BASE_IMAGE=$(LOCAL_BASE)
	@$(DOCKER) image inspect $(REDIS_IMAGE) >/dev/null 2>&1 || $(MAKE) image-redis
	$(BIN)/python scripts/k8s/e2e.py --out results/k8s-real
	$(BIN)/pytest -q -m k8s_e2e

# Ray's cluster launcher over SSH to separate hosts (scripts/onprem/e2e.py, docs/cloud.md):
# 3 host containers with sshd, the shipped cluster/onprem.yaml; results/onprem/e2e.json.
ONPREM_IMAGE ?= rayscale-onprem-host:$(VERSION)
image-onprem-host:
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/onprem-host.Dockerfile --build-arg BASE_IMAGE=$(IMAGE) \
	  -t $(ONPREM_IMAGE) docker
e2e-onprem: install
	@command -v ssh >/dev/null && command -v rsync >/dev/null || { \
	  echo "e2e-onprem needs ssh and rsync here (Debian: apt-get install openssh-client rsync)"; exit 1; }
	@$(DOCKER) image inspect $(IMAGE) >/dev/null 2>&1 || $(MAKE) image BASE_IMAGE=$(LOCAL_BASE)
	@$(DOCKER) image inspect $(ONPREM_IMAGE) >/dev/null 2>&1 || $(MAKE) image-onprem-host
	RAYSCALE_ONPREM_IMAGE=$(ONPREM_IMAGE) $(BIN)/python scripts/onprem/e2e.py --out results/onprem

lint: install
	$(BIN)/ruff check rayscale job bench scripts tests
	$(BIN)/ruff format --check rayscale job bench scripts tests
	$(BIN)/hadolint docker/Dockerfile docker/redis.Dockerfile docker/onprem-host.Dockerfile

# Build the image (BuildKit). Where no registry is reachable: make image-base first, then
# make image BASE_IMAGE=rayscale-base:bookworm.
image:
	@find docker/certs -name '*.crt' -delete
	@if [ -n "$(CA_CERTS)" ]; then cp $(CA_CERTS)/*.crt docker/certs/; fi
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	  --build-arg RAYSCALE_VERSION=$(VERSION) --build-arg RAY_VERSION=$(RAY_VERSION) -t $(IMAGE) .
	@find docker/certs -name '*.crt' -delete

# The Job API as the contract between the launcher and a cluster: this venv's launcher (the
# lock's Ray) drives a docker cluster whose image is built on an earlier Ray release, and
# runs the job on it: results/compat/ray-$(OLD_RAY).json (docs/benchmarks.md). Needs the
# image's base (make image-base where no registry is reachable: BASE_IMAGE=...).
OLD_RAY ?= 2.52.1
COMPAT_STATE := .rayscale-compat
ray-compat: install
	$(MAKE) image IMAGE=rayscale:$(VERSION)-ray$(OLD_RAY) RAY_VERSION=$(OLD_RAY)
	@mkdir -p results/compat
	$(BIN)/rayscale cluster up --provider docker --image rayscale:$(VERSION)-ray$(OLD_RAY) \
	  --workers 2 --state-dir $(COMPAT_STATE)
	$(BIN)/rayscale job submit --state-dir $(COMPAT_STATE) --save results/compat/ray-$(OLD_RAY).json \
	  -- $(JOB_ARGS); rc=$$?; $(BIN)/rayscale cluster down --state-dir $(COMPAT_STATE); exit $$rc
	$(MAKE) ray-compat-launcher

# The other way round: a launcher on OLD_RAY (its own venv, the base install) drives a local
# cluster of this venv's Ray: results/compat/launcher-ray-$(OLD_RAY).json.
OLD_VENV := .venv-ray$(OLD_RAY)
ray-compat-launcher: install
	@test -x $(OLD_VENV)/bin/python || $(PYTHON) -m venv $(OLD_VENV)
	$(OLD_VENV)/bin/pip install --quiet "ray[default]==$(OLD_RAY)" "pyyaml>=6,<7" "click>=8.1,<9" \
	  "rich>=13,<16" "psutil>=5.9,<8"
	$(OLD_VENV)/bin/pip install --quiet --no-deps -e .
	@mkdir -p results/compat
	$(BIN)/rayscale cluster up --workers 2 --state-dir $(COMPAT_STATE)-launcher
	$(OLD_VENV)/bin/rayscale job submit --state-dir $(COMPAT_STATE)-launcher \
	  --save results/compat/launcher-ray-$(OLD_RAY).json -- $(JOB_ARGS); rc=$$?; \
	  $(BIN)/rayscale cluster down --state-dir $(COMPAT_STATE)-launcher; exit $$rc

# The air-gapped base: Debian bookworm + Python 3.11 via debootstrap and docker import.
image-base:
	DOCKER=$(DOCKER) docker/make-base.sh $(LOCAL_BASE)

# A Redis image on that base, for --gcs-ft redis where no registry serves redis:7.4.6
# (cluster up --gcs-ft redis --redis-image $(REDIS_IMAGE)).
REDIS_IMAGE ?= rayscale-redis:bookworm
image-redis:
	DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/redis.Dockerfile --build-arg BASE_IMAGE=$(LOCAL_BASE) \
	  -t $(REDIS_IMAGE) docker

# The records and tokens of clusters still recorded stay: without them `down` cannot stop them.
clean:
	@left=$$(ls .rayscale/cluster.json .rayscale/clusters/*/cluster.json 2>/dev/null); \
	if [ -n "$$left" ]; then echo "make clean: clusters are still recorded ($$(echo $$left)): run rayscale cluster down for each first" >&2; exit 1; fi
	rm -rf $(VENV) $(SCAN_VENV) $(S3_VENV) $(MLFLOW_VENV) .rayscale results/*.json

# Random vs Optuna's TPE at the same budget on the insurance table, with Ray (2 local
# workers) and with no cluster (the plain loop / plain Optuna): results/search-compare/.
SEARCH_ARGS ?= --data $(CURDIR)/../shared/datasets/insurance.csv --target charges --num-samples 32 \
  --max-rounds 300 --scheduler fifo --mode both --storage-path $(CURDIR)/results/search-compare
search-compare: install
	@mkdir -p results/search-compare
	$(BIN)/rayscale cluster up --provider local --workers 2 --state-dir .rayscale-compare
	rc=0; for alg in random optuna; do \
	  $(BIN)/rayscale job submit --state-dir .rayscale-compare --save results/search-compare/$$alg.json \
	    -- $(SEARCH_ARGS) --search-alg $$alg || rc=$$?; done; \
	  $(BIN)/rayscale cluster down --state-dir .rayscale-compare; exit $$rc

# The standard study (synthetic 50k x 40, 16 configs, workers 1,2, FIFO, 3 repeats) and the
# kit's figures, on the local provider and on the docker provider (the kit's image: make
# image): results/bench/{local,docker}/{bench.json,study.json,points.csv,scaling.png}; then
# what a runtime env, checkpoints and `cluster up` cost: results/bench/*.json.
bench: install
	$(BIN)/python -m bench.bench --provider local --out results/bench/local
	$(BIN)/python -m bench.bench --provider docker --out results/bench/docker
	$(BIN)/python -m bench.runtime_env_cost --out results/bench/runtime_env.json
	$(BIN)/python -m bench.checkpoint_cost --out results/bench/checkpoint.json
	$(BIN)/python -m bench.startup_profile --out results/bench/startup_profile.json

# How close the live ETA comes to the search's real end, FIFO and ASHA, at 25/50/75 % of the
# trials: results/bench/eta.json (docs/scaling.md).
eta: install
	$(BIN)/python -m bench.eta_accuracy --out results/bench/eta.json

# What the orchestration costs as local worker nodes grow to 16, and docker containers to 8
# where the image is built (sleep trials: the host's cores are not the limit):
# results/scale/{scale.json,scale.png,study/} (docs/scaling.md).
scale: install
	$(BIN)/python -m bench.scale --out results/scale

# Every port a local (and, with IMAGE built, a docker) cluster listens on, probed with and
# without the token and from a network namespace next to this machine (root, iproute2).
probe: install
	RAYSCALE_IMAGE=$(IMAGE) $(BIN)/python -m bench.probe_ports --out results/reliability

# A scaling study on 1,2,3 local workers while a random worker node is killed every
# CHAOS_EVERY seconds: results/reliability/chaos/chaos.json (docs/reliability.md).
CHAOS_EVERY ?= 30
CHAOS_ARGS ?= --data synthetic:rows=40000,features=20,noise=1.0,seed=3 --num-samples 12 --max-rounds 300 --checkpoint-every 50 --checkpoint-min-s 0
chaos: install
	$(BIN)/python -m bench.chaos --workers 1,2,3 --repeats 2 --every $(CHAOS_EVERY) --out results/reliability/chaos -- $(CHAOS_ARGS)

# The storage path vanishing and filling up mid-search (12 trials, fault after 4), each
# then resumed: results/reliability/storage.json (docs/reliability.md). Root, for the tmpfs.
storage-faults: install
	$(BIN)/python -m bench.storage_faults --out results/reliability/storage.json

# The Job API under load: 100 small jobs from 4 clients at once on a 2-worker local cluster:
# results/reliability/load.json (docs/reliability.md).
LOAD_JOBS ?= 100
load: install
	$(BIN)/python -m bench.load --jobs $(LOAD_JOBS) --clients 4 --out results/reliability/load.json
