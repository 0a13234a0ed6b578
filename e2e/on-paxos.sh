#!/usr/bin/env bash
# Kubernetes on a paxosrsm cluster (issue 13): kube-apiserver keeps every
# object in a 3-node paxosrsm cluster (etcd's v3 API), started here.
#   e2e/on-paxos.sh smoke   - namespaces, ConfigMaps, a watch, a Deployment (make test runs it)
#   e2e/on-paxos.sh full    - the project's whole e2e suite on it (make e2e-on-paxos)
# The local Kubernetes (../shared/k8s) is brought down before and after, so
# that the next `cluster up` is back on its own etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-smoke}
if [ -z "${K8S_LOCAL:-}" ]; then
  for c in ../shared/k8s/cluster /work/shared/k8s/cluster; do
    if [ -x "$c" ]; then K8S_LOCAL=$c; break; fi
  done
fi
[ -n "${K8S_LOCAL:-}" ] || { echo "on-paxos: no local Kubernetes script (K8S_LOCAL)" >&2; exit 2; }
DATA=$(mktemp -d /tmp/paxos-k8s.XXXXXX)
GRPC=${PAXOS_K8S_GRPC_BASE:-2579}
EPS="127.0.0.1:$GRPC,127.0.0.1:$((GRPC + 1)),127.0.0.1:$((GRPC + 2))"
.venv/bin/paxosctl local up --data-dir "$DATA" --base-port 7400 --http-base 8400 \
  --grpc-base "$GRPC" > "$DATA/local-up.log" 2>&1 &
UP=$!
cleanup() {
  "$K8S_LOCAL" down >/dev/null 2>&1 || true
  kill -INT "$UP" 2>/dev/null || true
  wait "$UP" 2>/dev/null || true
  echo "on-paxos: paxosrsm data and logs in $DATA"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  ETCDCTL_API=3 etcdctl --endpoints "$EPS" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
"$K8S_LOCAL" down >/dev/null
KUBECONFIG=$(K8S_LOCAL_ETCD_SERVERS="http://${EPS//,/,http://}" "$K8S_LOCAL" up)
export KUBECONFIG PAXOS_K8S_ENDPOINTS=$EPS
if [ "$MODE" = full ]; then
  BASE_IMAGE=$("$K8S_LOCAL" base-image) e2e/run.sh "${@:2}"
else
  .venv/bin/python e2e/smoke_on_paxos.py
fi
