"""CI: check that a benchmark's quick run wrote bench/results/<name>.json, fresh and in the shared shape.

    python .ci/bench_result.py NAME STARTED_EPOCH_SECONDS

The shape: a top-level "pass" (bool) and "checks" {name: {"value", "limit", "ok"}}, "pass" being all
the checks' "ok", and "mode": "quick". Prints the verdict; exits non-zero on a missing, stale or
malformed result (not on failed checks: on a shared machine those are reported, not fatal).
"""

import json
import sys
from pathlib import Path


def main(name: str, started: float) -> str:
    path = Path("bench/results") / f"{name}.json"
    if not path.exists() or path.stat().st_mtime < started:
        raise SystemExit(f"FAIL: {path} was not written by this run")
    result = json.loads(path.read_text())
    checks = result.get("checks")
    problems = []
    if result.get("mode") != "quick":
        problems.append(f"mode is {result.get('mode')!r}, not 'quick'")
    if not isinstance(result.get("pass"), bool):
        problems.append("no top-level boolean 'pass'")
    if not isinstance(checks, dict) or not checks:
        problems.append("no 'checks'")
    else:
        for check_name, check in checks.items():
            if not isinstance(check, dict) or not {"value", "limit", "ok"} <= set(check) \
                    or not isinstance(check["ok"], bool):
                problems.append(f"check {check_name!r} lacks value, limit or a boolean ok")
        if not problems and result["pass"] != all(check["ok"] for check in checks.values()):
            problems.append("'pass' disagrees with its checks")
    if problems:
        raise SystemExit(f"FAIL: {path}: " + "; ".join(problems))
    failed = [check_name for check_name, check in checks.items() if not check["ok"]]
    return f"{name}: " + ("pass" if result["pass"] else "checks failed: " + ", ".join(failed))


if __name__ == "__main__":
    print(main(sys.argv[1], float(sys.argv[2])))
