"""`python -m benchmarks [NAME ...]`: run every benchmarks/bench_*.py (or the named ones)
one after another in fresh processes, so no benchmark warms another's caches."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if s.stem in names or s.stem.removeprefix("bench_") in names]
    failed = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        failed += subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode != 0
    return 1 if failed else 0


raise SystemExit(main(sys.argv[1:]))
