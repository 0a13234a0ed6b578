#!/usr/bin/env bash
# make e2e: build the images, make sure a cluster is there, run the e2e suite.
# With KUBECONFIG set, that cluster is used (for kind, load the images first:
#   kind load docker-image paxosrsm/node:e2e paxosrsm/operator:e2e paxosrsm/s3test:e2e).
# Without it, the local Kubernetes of ../shared/k8s is started (a real 1.20).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${K8S_LOCAL:-}" ]; then
  # ../shared/k8s beside the checkout (the project's machines), else /work/shared.
  for c in ../shared/k8s/cluster /work/shared/k8s/cluster; do
    if [ -x "$c" ]; then K8S_LOCAL=$c; break; fi
  done
fi
if [ -z "${KUBECONFIG:-}" ]; then
  if [ -z "${K8S_LOCAL:-}" ]; then
    echo "e2e: no KUBECONFIG and no local Kubernetes script (set K8S_LOCAL=.../k8s/cluster)" >&2
    exit 2
  fi
  KUBECONFIG=$("$K8S_LOCAL" up)
  export KUBECONFIG
  BASE_IMAGE=${BASE_IMAGE:-$("$K8S_LOCAL" base-image)}
fi
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
make images BASE_IMAGE="$BASE_IMAGE" TAG="${E2E_TAG:-e2e}"
if [ -n "${KIND_CLUSTER:-}" ]; then
  # kind nodes have their own image store: copy the fresh images in.
  kind load docker-image --name "$KIND_CLUSTER" \
    "paxosrsm/node:${E2E_TAG:-e2e}" "paxosrsm/operator:${E2E_TAG:-e2e}" "paxosrsm/s3test:${E2E_TAG:-e2e}"
fi
.venv/bin/pip install -q -e '.[dev,operator]'
# -s: the scenarios print their timings (apply -> Available, deletion ->
# healthy, upgrade order); they go in the closing notes and e2e/README.md.
exec .venv/bin/pytest -p no:cacheprovider -v -s e2e "$@"
