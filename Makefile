# The two commands (see README):
#   make demo   - set up and run the main job: a local 3-replica cluster (Ctrl-C stops it)
#   make test   - set up and run lint, types, the whole test suite, and the e2e
#                 suite on a real Kubernetes (started here if KUBECONFIG is unset)
#   make check  - the same without e2e (no docker or Kubernetes needed)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: protos check chromium etcd-tools netns-tools prometheus-tools etcd-compat-table e2e e2e-on-paxos e2e-on-paxos-smoke e2e-campaign fuzz-campaign helm-lint wheelhouse images demo sim-demo test lint typecheck unit jepsen-slice jepsen sim-sweep bench bench-net bench-storage bench-recovery bench-flood bench-etcd bench-table bench-profile bench-transfer bench-slice watch-load clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,operator]'
	touch $(STAMP)

REPLICAS ?= 3
DATA ?= ./paxos-data
demo: $(STAMP)
	$(BIN)/paxosctl local up --replicas $(REPLICAS) --data-dir $(DATA)

# The narrated, deterministic simulation of a cluster (no sockets, no disk).
sim-demo: $(STAMP)
	$(BIN)/python -m paxosrsm.demo

lint: $(STAMP)
	$(BIN)/ruff check node operator tests bench charts e2e
	$(BIN)/ruff format --check node operator tests bench charts e2e

typecheck: $(STAMP)
	$(BIN)/mypy

# The status page is tested in headless Chromium (Debian's package): installed
# here when missing, so that `make test` needs nothing else on a fresh machine.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (the status-page tests use it)"; \
	  apt-get update -q >/dev/null 2>&1 || true; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }

# etcd 3.4 and etcdctl (Debian's etcd-server and etcd-client): the etcd v3 API
# tests run etcdctl against a real etcd and against paxosrsm, side by side.
etcd-tools:
	@command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1 || { \
	  echo "installing Debian's etcd-server and etcd-client (the etcd API tests use them)"; \
	  apt-get update -q >/dev/null 2>&1 || true; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client >/dev/null; }

# ip and iptables: the Jepsen-style tests build network namespaces (root).
netns-tools:
	@command -v ip >/dev/null 2>&1 && command -v iptables >/dev/null 2>&1 || { \
	  echo "installing Debian's iproute2 and iptables (the Jepsen-style tests use them)"; \
	  apt-get update -q >/dev/null 2>&1 || true; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 iptables >/dev/null; }

prometheus-tools:
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus (the monitoring tests run it and promtool)"; \
	  apt-get update -q >/dev/null 2>&1 || true; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; }

unit: $(STAMP) chromium etcd-tools prometheus-tools
	$(BIN)/pytest -n 2 -q -m "not jepsen"

# The Jepsen-style slice runs alone: its liveness figures are timings of real
# processes, which a parallel sweep on the same two cores would distort.
jepsen-slice: $(STAMP) netns-tools
	$(BIN)/pytest -q -m jepsen

check: lint typecheck helm-lint unit jepsen-slice bench-slice

test: check e2e e2e-on-paxos-smoke

# helm lint through helm-sdkpy (the real Helm library), which needs Python >= 3.12.
PY312 ?= $(shell ls -d /root/.pyenv/versions/3.12*/bin/python3 2>/dev/null | head -1 || true)$(if $(wildcard /root/.pyenv/versions/3.12*),,$(shell command -v python3.12))
HELM_VENV := .helm-venv
$(HELM_VENV)/.installed:
	@test -n "$(PY312)" || { echo "helm-lint needs Python 3.12 (set PY312=...)"; exit 1; }
	$(PY312) -m venv $(HELM_VENV)
	$(HELM_VENV)/bin/pip install -q helm-sdkpy pyyaml
	touch $@
# End-to-end on a real cluster ($KUBECONFIG, or the local Kubernetes): see e2e/README.md.
e2e: $(STAMP) $(HELM_VENV)/.installed
	e2e/run.sh

# docs/etcd-compat.md: the compatibility table, written by the tests that run
# etcdctl against paxosrsm and a real etcd 3.4 side by side.
etcd-compat-table: $(STAMP) etcd-tools
	ETCD_COMPAT_TABLE=docs/etcd-compat.md $(BIN)/pytest -q -p no:xdist tests/test_etcd_compat.py

# Kubernetes on paxosrsm (issue 13): kube-apiserver keeps its objects in a
# 3-node paxosrsm cluster through etcd's v3 API. The smoke runs in `make test`;
# the whole e2e suite on it is `make e2e-on-paxos`.
e2e-on-paxos-smoke: $(STAMP) etcd-tools
	e2e/on-paxos.sh smoke

e2e-on-paxos: $(STAMP) $(HELM_VENV)/.installed etcd-tools
	e2e/on-paxos.sh full

# The operator's campaign (issue 10): 20 applies, 20 pod deletions, 10 rolling
# upgrades under load, each with its limit (20 s; never two acceptors down).
e2e-campaign: $(STAMP) $(HELM_VENV)/.installed
	E2E_APPLIES=20 E2E_DELETIONS=20 E2E_UPGRADES=10 e2e/run.sh \
	  -k "consecutive_applies or delete_each_pod or rolling_upgrade"

helm-lint: $(HELM_VENV)/.installed
	$(HELM_VENV)/bin/python charts/lint.py --strict
	$(HELM_VENV)/bin/python charts/lint.py --strict --values charts/ci-values-all-on.yaml
	$(HELM_VENV)/bin/python charts/lint.py --strict --values charts/ci-values-namespaced.yaml

# Issue 12's fuzz campaign: 1,000,000 inputs on each of UDP, TCP and HTTP
# (UDP and TCP include the client API) against three real nodes; it prints
# the counts, the time per surface and every refusal counter. CI runs the
# 100,000-input slice in the unit suite.
FUZZ_EACH ?= 1000000
GRPC_FUZZ_EACH ?= 100000
fuzz-campaign: $(STAMP)
	FUZZ_UDP=$(FUZZ_EACH) FUZZ_TCP=$(FUZZ_EACH) FUZZ_HTTP=$(FUZZ_EACH) \
	  $(BIN)/pytest -q -s -p no:xdist tests/test_wire_fuzz.py
	GRPC_FUZZ=$(GRPC_FUZZ_EACH) $(BIN)/pytest -q -s -p no:xdist tests/test_grpc_fuzz.py

# At least 20,000 seeds of the deterministic simulator with every fault; it
# prints the simulated time covered.
SEEDS ?= 20000
sim-sweep: $(STAMP)
	$(BIN)/python -m paxosrsm.sim sweep --seeds $(SEEDS) --jobs 2

# The Jepsen-style campaign on real processes in network namespaces (root):
# every nemesis, 8 s of fault each; prints the liveness figures (issue 11).
jepsen: $(STAMP) netns-tools
	$(BIN)/python -m paxosrsm.testing.jepsen --fault-seconds 8

# Benchmarks (not timed tests): each prints medians and ratios against the peers
# measured in the same run.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench-storage: $(BENCH_STAMP)
	$(BIN)/python bench/storage_bench.py

bench-recovery: $(BENCH_STAMP)
	$(BIN)/python bench/recovery_bench.py

# Ours vs PySyncObj on loopback: throughput sweep, latency, failover.
bench-net: $(BENCH_STAMP)
	$(BIN)/python bench/net_bench.py $(BENCH_ARGS)

# Write throughput under a flood of bad datagrams, against the same cluster unflooded.
bench-flood: $(BENCH_STAMP)
	$(BIN)/python bench/flood_bench.py $(BENCH_ARGS)

# etcd's v3 API: paxosrsm against etcd 3.4 (3 members each), the same gRPC client.
bench-etcd: $(BENCH_STAMP) etcd-tools
	$(BIN)/python bench/etcd_bench.py $(BENCH_ARGS)

# 10,000 watchers on one prefix, 1,000 writes/s (issue 13's resource run);
# WATCH_LOAD_ARGS="--against etcd" runs the same load on etcd 3.4.
watch-load: $(STAMP) etcd-tools
	$(BIN)/python bench/watch_load.py $(WATCH_LOAD_ARGS)

# Issue 15's table, every row measured in one run beside its peers (etcd 3.4,
# PySyncObj); BENCH_ARGS=--quick for short points.
bench-table: $(BENCH_STAMP) etcd-tools
	$(BIN)/python bench/table.py $(BENCH_ARGS)

# A 1 GiB snapshot taken by a wiped node, against dd and a loopback copy (TRANSFER_ARGS="--mb 256").
bench-transfer: $(BENCH_STAMP)
	$(BIN)/python bench/transfer_bench.py $(TRANSFER_ARGS)

# Where the leader's CPU goes at peak (py-spy); PROFILE_ARGS="--storage-engine sqlite".
bench-profile: $(BENCH_STAMP)
	$(BIN)/python bench/profile_leader.py $(PROFILE_ARGS)

# CI's slice of the benchmarks: each command runs, short (no figure is checked).
bench-slice: $(BENCH_STAMP) etcd-tools
	$(BIN)/python bench/storage_bench.py --rounds 1 --records 500
	$(BIN)/python bench/table.py --quick

bench: bench-net bench-storage bench-recovery bench-flood bench-etcd bench-table

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Wheels of the runtime dependencies, for the container images (built offline).
wheelhouse: $(STAMP)
	rm -rf wheelhouse/node && mkdir -p wheelhouse/node
	$(BIN)/pip wheel -q -w wheelhouse/node msgpack aiohttp prometheus-client pyyaml uvloop cryptography 'grpcio>=1.85.4' 'protobuf>=7.35.1' sortedcontainers minio
	rm -rf wheelhouse/s3test && mkdir -p wheelhouse/s3test
	$(BIN)/pip wheel -q -w wheelhouse/s3test 'moto[server]'
	rm -rf wheelhouse/operator && mkdir -p wheelhouse/operator
	$(BIN)/pip wheel -q -w wheelhouse/operator kopf kubernetes aiohttp prometheus-client

# Container images on a given base (BASE_IMAGE=k8s-local/base:bookworm here).
BASE_IMAGE ?= python:3.11-slim-bookworm
TAG ?= dev
images: wheelhouse
	docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) -f Dockerfile.node -t paxosrsm/node:$(TAG) .
	docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) -f Dockerfile.operator -t paxosrsm/operator:$(TAG) .
	docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) -f Dockerfile.s3test -t paxosrsm/s3test:$(TAG) .

# The etcd v3 API's Python modules, from etcdapi/pb/*.proto (a test checks they match).
protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I node --python_out=node --grpc_python_out=node \
	  node/paxosrsm/etcdapi/pb/kv.proto node/paxosrsm/etcdapi/pb/auth.proto node/paxosrsm/etcdapi/pb/rpc.proto
	rm -f node/paxosrsm/etcdapi/pb/kv_pb2_grpc.py node/paxosrsm/etcdapi/pb/auth_pb2_grpc.py
