"""A verifier worker process: JSON tasks on stdin, one JSON answer line each on stdout. Started by
verifiers.pool and killed by it when a task outlives its deadline, so nothing here needs a timeout of its own.

Task:   {"kind": "math", "completion", "reference", "extract"} | {"kind": "format", "completion", "pattern"}
Answer: {"ok": true, "value": bool} | {"ok": false, "failure": "no_answer" | "error: ..."}
"""

from __future__ import annotations

import json
import re
import resource
import sys
from typing import Any

from . import maths


def handle(task: dict[str, Any]) -> dict[str, Any]:
    kind = task.get("kind")
    try:
        if kind == "math":
            return {
                "ok": True,
                "value": maths.check(task["completion"], task["reference"], task.get("extract", "boxed")),
            }
        if kind == "format":
            return {"ok": True, "value": re.fullmatch(task["pattern"], task["completion"], re.DOTALL) is not None}
        return {"ok": False, "failure": f"error: unknown task kind {kind!r}"}
    except maths.NoAnswer:
        return {"ok": False, "failure": "no_answer"}
    except Exception as e:  # a reference math-verify cannot read, a bad regex: this sample's error, not the worker's
        return {"ok": False, "failure": f"error: {type(e).__name__}: {str(e)[:200]}"}


def main() -> int:
    if len(sys.argv) > 1:  # the memory this worker may use, in MiB (a sympy blow-up is a MemoryError, not an OOM kill)
        limit = int(sys.argv[1]) << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    maths.quiet()
    import math_verify  # noqa: F401  (loaded now, so the first task does not pay for sympy's import)

    sys.stdout.write('{"ready": true}\n')
    sys.stdout.flush()
    for line in sys.stdin:
        if line.strip():
            sys.stdout.write(json.dumps(handle(json.loads(line))) + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
