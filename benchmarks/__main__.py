"""`python -m benchmarks [NAME ...]`: run every benchmarks/bench_*.py (or the named ones)
one after another in fresh processes, so no benchmark warms another's caches. `soak` (an hour of
faults, benchmarks/soak.py) runs only when named: it is `make soak`'s, not `make bench`'s.
Options after one NAME are that benchmark's (`python -m benchmarks backtest --skip-motif`)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMED_ONLY = ("soak",)


def main(argv: list[str]) -> int:
    cut = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:cut], argv[cut:]
    if options and len(names) != 1:
        print("python -m benchmarks: options go to one named benchmark: python -m benchmarks NAME [OPTION ...]",
              file=sys.stderr)
        return 2
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        known = {s.stem.removeprefix("bench_") for s in scripts} | set(NAMED_ONLY)
        unknown = [n for n in names if n.removeprefix("bench_") not in known]
        if unknown:
            print(f"python -m benchmarks: no benchmark {', '.join(unknown)}; choose from {', '.join(sorted(known))}",
                  file=sys.stderr)
            return 2
        scripts = [s for s in scripts if s.stem in names or s.stem.removeprefix("bench_") in names]
        scripts += [HERE / f"{n}.py" for n in NAMED_ONLY if n in names]
    failed = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        module = f"{HERE.name}.{script.stem}"
        failed += subprocess.run([sys.executable, "-m", module, *options], cwd=HERE.parent).returncode != 0
    return 1 if failed else 0


raise SystemExit(main(sys.argv[1:]))
