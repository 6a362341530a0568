"""TA-Lib, loaded without pandas.

TA-Lib's Python wrapper imports pandas and polars when they are installed, only so that its
functions accept their Series. pandas (with the pyarrow it pulls in) is 80 MB of resident memory
the daemon never uses, on a machine of 1 GiB. So, unless pandas is already loaded (research
code that works on DataFrames), TA-Lib is imported with both hidden: its functions then take
NumPy arrays, which is all the strategies pass.
"""

import sys

_HIDDEN = ("pandas", "polars")


def _load():
    hidden = [name for name in _HIDDEN if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # makes `import pandas` raise ModuleNotFoundError inside talib
    try:
        import talib
    finally:
        for name in hidden:
            del sys.modules[name]
    return talib


talib = _load()
