"""Install or uninstall the chart with the real Helm library (helm-sdkpy, Python >= 3.12).

.helm-venv/bin/python e2e/helm_install.py install RELEASE NAMESPACE [key=value ...]
.helm-venv/bin/python e2e/helm_install.py uninstall RELEASE NAMESPACE
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
from pathlib import Path

import helm_sdkpy

CHART = Path(__file__).resolve().parent.parent / "charts" / "paxosrsm-operator"


def _set(values: dict[str, object], dotted: str, raw: str) -> None:
    cur = values
    *path, last = dotted.split(".")
    for p in path:
        cur = cur.setdefault(p, {})  # type: ignore[assignment]
    v: object = raw
    if raw in ("true", "false"):
        v = raw == "true"
    elif raw.isdigit():
        v = int(raw)
    cur[last] = v


def main() -> int:
    action, release, ns, *sets = sys.argv[1:]
    cfg = helm_sdkpy.Configuration(namespace=ns, kubeconfig=os.environ.get("KUBECONFIG"))
    if action == "install":
        values: dict[str, object] = {}
        for s in sets:
            k, _, v = s.partition("=")
            _set(values, k, v)
        inst = helm_sdkpy.Install(cfg)
        params = inspect.signature(inst.run).parameters
        kw = {"values": values} if "values" in params else {}
        out = asyncio.run(inst.run(release, str(CHART), **kw))
    else:
        out = asyncio.run(helm_sdkpy.Uninstall(cfg).run(release))
    rel = out.get("release", out) if isinstance(out, dict) else {}
    info = rel.get("info", {}) if isinstance(rel, dict) else {}
    status = info.get("status") if isinstance(info, dict) else None
    print(f"helm {action} {release} -n {ns}: {status or json.dumps(out, default=str)[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
