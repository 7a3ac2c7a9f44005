"""`make mutmut`'s summary: mutmut's verdicts per module, read from its result files (mutants/**/*.py.meta).

Prints a Markdown table (module, mutants, killed, survived, timeout, no tests, other, kill rate) and the total.
The kill rate counts a timeout as killed (the mutant made the tests hang, which a run notices) and is taken
over all mutants, so a mutant no test reaches ("no tests") counts as not killed; ``--equivalent FILE`` takes a
list of mutant names (one a line, ``#`` comments) judged equivalent (no observable change) and reports the rate
without them as well.

    .venv/bin/python tools/mutmut_summary.py [--equivalent tools/mutmut_equivalent.txt] [--survivors]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# mutmut 3's exit codes (mutmut/stats.py): 1 and 3 are a failed test run, 0 a passed one
KILLED = {1, 3}
SURVIVED = {0}
TIMEOUT = {36, 24, -24, 152, 255}
NO_TESTS = {33, 5}


def verdict(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in TIMEOUT:
        return "timeout"
    if code in NO_TESTS:
        return "no tests"
    if code is None:
        return "not checked"
    return "other"


def load(root: Path) -> dict[str, dict[str, str]]:
    """module path -> mutant name -> verdict."""
    out: dict[str, dict[str, str]] = {}
    for meta in sorted(root.glob("**/*.py.meta")):
        data = json.loads(meta.read_text())
        module = str(meta.relative_to(root))[: -len(".meta")]
        out[module] = {name: verdict(code) for name, code in data.get("exit_code_by_key", {}).items()}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=REPO / "mutants")
    ap.add_argument("--equivalent", type=Path, help="mutant names judged equivalent, one a line")
    ap.add_argument("--survivors", action="store_true", help="list the surviving mutants' names")
    args = ap.parse_args()
    if not args.root.is_dir():
        print(f"no mutmut results in {args.root}: run `make mutmut` first", file=sys.stderr)
        return 2
    equivalent: set[str] = set()
    if args.equivalent:
        for line in args.equivalent.read_text().splitlines():
            name = line.split("#", 1)[0].strip()
            if name:
                equivalent.add(name)
    results = load(args.root)
    cols = ["killed", "survived", "timeout", "no tests", "not checked", "other"]
    print("| module | mutants | " + " | ".join(cols) + " | killed % | equivalent | killed % without them |")
    print("|---" * (len(cols) + 5) + "|")
    total: Counter[str] = Counter()
    total_n = total_eq = 0
    for module, verdicts in results.items():
        c = Counter(verdicts.values())
        n = len(verdicts)
        eq = sum(1 for name, v in verdicts.items() if name in equivalent and v != "killed" and v != "timeout")
        total.update(c)
        total_n += n
        total_eq += eq
        print(
            f"| {module} | {n} | " + " | ".join(str(c[k]) for k in cols) + f" | {_rate(c, n)} | {eq} | "
            f"{_rate(c, n - eq)} |"
        )
    print(
        f"| **total** | {total_n} | " + " | ".join(str(total[k]) for k in cols) + f" | {_rate(total, total_n)} | "
        f"{total_eq} | {_rate(total, total_n - total_eq)} |"
    )
    if args.survivors:
        print()
        for verdicts in results.values():
            for name, v in verdicts.items():
                if v in ("survived", "no tests") and name not in equivalent:
                    print(f"{v}: {name}")
    return 0


def _rate(c: Counter[str], n: int) -> str:
    return f"{100.0 * (c['killed'] + c['timeout']) / n:.1f}" if n else "-"


if __name__ == "__main__":
    sys.exit(main())
