"""`helm lint` of the chart through helm-sdkpy (the real Helm library; Python >= 3.12).

    make helm-lint     (creates .helm-venv with Python 3.12 and runs this)
    python charts/lint.py --strict --values charts/ci-values-all-on.yaml

With --values FILE, the chart is linted (so rendered) with FILE's values
merged over values.yaml, in a temporary copy: Helm's lint takes no values of
its own, and every optional template must render too.

Exits 1 if Helm reports an error (or, with --strict, a warning).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import helm_sdkpy
import yaml


def merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: merge(base.get(k), v) for k, v in over.items()}}
    return over


def main() -> int:
    argv = sys.argv[1:]
    extra = None
    if "--values" in argv:
        i = argv.index("--values")
        extra = Path(argv[i + 1])
        del argv[i : i + 2]
    args = [a for a in argv if not a.startswith("-")]
    chart = Path(args[0]) if args else Path(__file__).resolve().parent / "paxosrsm-operator"
    strict = "--strict" in argv
    with tempfile.TemporaryDirectory() as tmp:
        if extra is not None:
            copy = Path(tmp) / chart.name
            shutil.copytree(chart, copy)
            values = yaml.safe_load((chart / "values.yaml").read_text())
            merged = merge(values, yaml.safe_load(extra.read_text()))
            (copy / "values.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
            chart = copy
            print(f"linting with {extra} merged over values.yaml", file=sys.stderr)
        result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(str(chart)))
    print(json.dumps(result, indent=1, default=str))
    # Helm's support.Severity: 1 info, 2 warning, 3 error.
    worst = max((m.get("Severity", 0) for m in result.get("Messages") or []), default=0)
    failed = bool(result.get("Errors")) or worst >= 3 or (strict and worst >= 2)
    print("helm lint:", "FAILED" if failed else "passed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
