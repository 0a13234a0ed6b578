"""`helm lint` of the chart through helm-sdkpy (the real Helm library; Python >= 3.12).

    make helm-lint     (creates .helm-venv with Python 3.12 and runs this)

Exits 1 if Helm reports an error (or, with --strict, a warning).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import helm_sdkpy


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    chart = Path(args[0]) if args else Path(__file__).resolve().parent / "paxosrsm-operator"
    strict = "--strict" in sys.argv
    result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(str(chart)))
    print(json.dumps(result, indent=1, default=str))
    # Helm's support.Severity: 1 info, 2 warning, 3 error.
    worst = max((m.get("Severity", 0) for m in result.get("Messages") or []), default=0)
    failed = bool(result.get("Errors")) or worst >= 3 or (strict and worst >= 2)
    print("helm lint:", "FAILED" if failed else "passed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
