"""Build the Cython kernels: every sniper/**/*.pyx becomes an extension module.

Flags are portable: -O3 plus x86-64-v3 (AVX2/FMA) only when the compiler and the
build machine support it, never -march=native, so a wheel built here runs on
any machine of the same class. SNIPER_PORTABLE=1 drops the ISA level entirely.
"""

import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def _compiler_accepts(flag: str) -> bool:
    """True when the C compiler builds and runs a trivial program with `flag`."""
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "probe.c")
        src.write_text("int main(void){return 0;}\n")
        exe = Path(tmp, "probe")
        try:
            built = subprocess.run([cc, flag, str(src), "-o", str(exe)], capture_output=True).returncode == 0
            return built and subprocess.run([str(exe)], capture_output=True).returncode == 0
        except OSError:
            return False


def _cpu_has_x86_64_v3() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return all(f in flags for f in (" avx2", " fma", " bmi2", " movbe"))


def _compile_args() -> list[str]:
    args = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
    if os.environ.get("SNIPER_PORTABLE") == "1" or sys.platform == "win32":
        return args
    if platform.machine() in ("x86_64", "AMD64") and _cpu_has_x86_64_v3() and _compiler_accepts("-march=x86-64-v3"):
        args.append("-march=x86-64-v3")
    return args


def _extensions() -> list[Extension]:
    args = _compile_args()
    exts = []
    for pyx in sorted(Path("sniper").rglob("*.pyx")):
        module = ".".join(pyx.with_suffix("").parts)
        exts.append(
            Extension(
                module,
                [str(pyx)],
                include_dirs=[numpy.get_include()],
                extra_compile_args=args,
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        _extensions(),
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
