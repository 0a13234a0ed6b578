"""A light write load from inside the cluster, and the check that every
acknowledged write is still readable.

The load generator is a pod of the node image (it has python3) running a small
urllib loop: PUT <base>/<prefix><i> = v<i>, paced to ``rate`` writes/s, a
5 s timeout per request, moving on after any error. It prints one line per
write to stdout: ``ACK <key> <value> <wall time>`` for an HTTP 200 and
``ERR <key> <wall time> <reason>`` otherwise. It stops (after finishing the
request in flight) when the file /tmp/stop appears, or after ``max_seconds``,
and ends with ``DONE acks=N errs=M``. The pod then completes, so its log stays
readable: the log is the record of what was acknowledged.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from conftest import AUTH_HEADER, NODE_IMAGE, TOKEN_FILE, member_container, wait_for

_SCRIPT = (
    r"""
import os, sys, time, urllib.error, urllib.request as u
base, prefix, rate, max_s = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
H = """
    + AUTH_HEADER
    + r"""
acks = errs = i = 0
t_end = time.monotonic() + max_s
nxt = time.monotonic()
while not os.path.exists("/tmp/stop") and time.monotonic() < t_end:
    key, val = f"{prefix}{i}", f"v{i}"
    try:
        req = u.Request(f"{base}/{key}", data=val.encode(), method="PUT", headers=H)
        r = u.urlopen(req, timeout=5)
        r.read()
        ok, why = r.status == 200, f"http {r.status}"
    except urllib.error.HTTPError as e:
        ok, why = False, f"http {e.code} {e.read()[:120]!r}"
    except Exception as e:
        ok, why = False, f"{type(e).__name__}: {str(e)[:120]}"
    if ok:
        acks += 1
        print(f"ACK {key} {val} {time.time():.3f}", flush=True)
    else:
        errs += 1
        print(f"ERR {key} {time.time():.3f} {why}", flush=True)
    i += 1
    nxt = max(nxt + 1.0 / rate, time.monotonic())
    time.sleep(max(0.0, nxt - time.monotonic()))
print(f"DONE acks={acks} errs={errs}", flush=True)
"""
)


@dataclass
class LoadResult:
    acked: dict[str, str] = field(default_factory=dict)
    ack_times: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    done: bool = False

    def acks_between(self, t0: float, t1: float) -> list[str]:
        """Keys acknowledged between wall-clock times t0 and t1."""
        return [k for k, t in self.ack_times.items() if t0 <= t <= t1]

    def summary(self) -> str:
        return f"{len(self.acked)} acked, {len(self.errors)} errors"


def parse_log(text: str) -> LoadResult:
    out = LoadResult()
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "ACK" and len(parts) >= 4:
            out.acked[parts[1]] = parts[2]
            out.ack_times[parts[1]] = float(parts[3])
        elif parts[0] == "ERR":
            out.errors.append(line)
        elif parts[0] == "DONE":
            out.done = True
    return out


class LoadGen:
    """``with LoadGen(k8s, ns, "px") as load: ...; res = load.stop()``."""

    def __init__(self, k8s: Any, ns: str, cluster: str, *, rate: float = 10.0,
                 prefix: str = "load-", max_seconds: float = 1800.0,
                 pod: str = "loadgen") -> None:  # fmt: skip
        self.k8s, self.ns, self.pod = k8s, ns, pod
        self.core = k8s.client.CoreV1Api()
        self.base = f"http://{cluster}.{ns}.svc.cluster.local:8080/v1/kv"
        self.secret = f"{cluster}-http-auth"
        self.args = [self.base, prefix, str(rate), str(max_seconds)]
        self.result: LoadResult | None = None

    def start(self) -> LoadGen:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.pod, "labels": {"app.kubernetes.io/name": "e2e-loadgen"}},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "load",
                    "image": NODE_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-u", "-c", _SCRIPT, *self.args],
                    "volumeMounts": [{"name": "http-auth", "readOnly": True,
                                      "mountPath": TOKEN_FILE.rsplit("/", 1)[0]}],
                }],
                "volumes": [{"name": "http-auth", "secret": {"secretName": self.secret}}],
            },
        }  # fmt: skip
        self.core.create_namespaced_pod(self.ns, body)
        wait_for(lambda: self._phase() in ("Running", "Succeeded", "Failed"), 120,
                 f"load generator {self.pod} running", every=0.5)  # fmt: skip
        # Wait for its first line: the load is really flowing before the test goes on.
        wait_for(lambda: self._log().strip() != "", 60, "the first write of the load", every=0.5)
        return self

    def _phase(self) -> str:
        return str(self.core.read_namespaced_pod(self.pod, self.ns).status.phase)

    def _log(self) -> str:
        return str(self.core.read_namespaced_pod_log(self.pod, self.ns, container="load"))

    def snapshot(self) -> LoadResult:
        """What the load has printed so far (it keeps running)."""
        return parse_log(self._log())

    def stop(self) -> LoadResult:
        """Stop the loop (after its request in flight) and read the whole log."""
        if self.result is not None:
            return self.result
        from kubernetes.stream import stream

        if self._phase() == "Running":
            stream(self.core.connect_get_namespaced_pod_exec, self.pod, self.ns,
                   command=["touch", "/tmp/stop"], container="load", stderr=True, stdin=False,
                   stdout=True, tty=False)  # fmt: skip
        phase = wait_for(lambda: (p := self._phase()) in ("Succeeded", "Failed") and p, 60,
                         "the load generator to finish", every=0.5)  # fmt: skip
        res = parse_log(self._log())
        assert phase == "Succeeded" and res.done, f"load generator ended badly: {phase}"
        self.result = res
        return res

    def __enter__(self) -> LoadGen:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        except Exception:
            if exc[0] is None:
                raise


_READER = (
    r"""
import json, sys, urllib.error, urllib.request as u
base, keys = sys.argv[1], json.loads(sys.argv[2])
H = """
    + AUTH_HEADER
    + r"""
out = {}
for k in keys:
    for attempt in range(3):
        try:
            r = u.urlopen(u.Request(f"{base}/{k}", headers=H), timeout=10)
            out[k] = [r.status, json.loads(r.read())["value"]]
            break
        except urllib.error.HTTPError as e:
            out[k] = [e.code, e.read().decode()[:200]]
            if e.code != 503:
                break
        except Exception as e:
            out[k] = [0, f"{type(e).__name__}: {e}"[:200]]
print(json.dumps(out))
"""
)


def read_keys(k8s: Any, ns: str, pod: str, base: str, keys: list[str]) -> dict[str, Any]:
    """Linearizable GETs of many keys from inside ``pod``: key -> [status, value]."""
    from kubernetes.stream import stream

    core = k8s.client.CoreV1Api()
    out: dict[str, Any] = {}
    for i in range(0, len(keys), 400):
        chunk = keys[i : i + 400]
        text = stream(core.connect_get_namespaced_pod_exec, pod, ns,
                      command=["python3", "-c", _READER, base, json.dumps(chunk)],
                      stderr=True, stdin=False, stdout=True, tty=False,
                      container=member_container(pod))  # fmt: skip
        out.update(json.loads(text.strip().splitlines()[-1]))
    return out


def assert_all_readable(k8s: Any, ns: str, pod: str, cluster: str,
                        acked: dict[str, str]) -> None:  # fmt: skip
    """Every acknowledged write reads back (linearizably) with its value."""
    base = f"http://{cluster}.{ns}.svc.cluster.local:8080/v1/kv"
    t0 = time.monotonic()
    got = read_keys(k8s, ns, pod, base, sorted(acked))
    bad = {k: got.get(k) for k, v in acked.items() if got.get(k) != [200, v]}
    print(f"read back {len(acked)} acknowledged writes in {time.monotonic() - t0:.1f}s")
    assert not bad, f"{len(bad)} acknowledged writes lost or wrong: {dict(list(bad.items())[:10])}"
