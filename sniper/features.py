"""The TA-Lib feature suite over a window of 1-minute bars, and `sniper features`.

Why a fixed table: models trained on these columns must find the same columns, computed the
same way, next year. So every indicator is listed below with its parameters spelled out (TA-Lib
releases have changed defaults, e.g. PPO's moving-average type) and its column named here, not
taken from TA-Lib's output names. Columns are `<family>_<indicator>[_<periods>][_<output>]`,
families trend, momentum, volatility, volume and cycle.

No look-ahead: every TA-Lib function here is a causal recursion over the window, so the row of
bar t depends on the window's bars up to t only: computing over a window cut after t gives the
same row (tests check this by truncation). Rows before an indicator's lookback are NaN; the
recursive ones (EMA, RSI, ATR, the Hilbert transforms, ...) also depend on where the window
starts, so compare features over windows of equal length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from talib import abstract

FAMILIES = ("trend", "momentum", "volatility", "volume", "cycle")
SMA, EMA = 0, 1  # TA-Lib MA_Type codes

# (column or column stem, TA-Lib function, its parameters, output suffixes of a multi-output function)
_SPEC: tuple[tuple[str, str, dict, tuple[str, ...]], ...] = (
    *((f"trend_sma_{p}", "SMA", {"timeperiod": p}, ()) for p in (10, 20, 50, 200)),
    *((f"trend_ema_{p}", "EMA", {"timeperiod": p}, ()) for p in (10, 20, 50, 200)),
    ("trend_wma_20", "WMA", {"timeperiod": 20}, ()),
    ("trend_dema_20", "DEMA", {"timeperiod": 20}, ()),
    ("trend_tema_20", "TEMA", {"timeperiod": 20}, ()),
    ("trend_trima_20", "TRIMA", {"timeperiod": 20}, ()),
    ("trend_kama_30", "KAMA", {"timeperiod": 30}, ()),
    ("trend_t3_5", "T3", {"timeperiod": 5, "vfactor": 0.7}, ()),
    ("trend_mama", "MAMA", {"fastlimit": 0.5, "slowlimit": 0.05}, ("mama", "fama")),
    ("trend_ht_trendline", "HT_TRENDLINE", {}, ()),
    ("trend_sar", "SAR", {"acceleration": 0.02, "maximum": 0.2}, ()),
    ("trend_midpoint_14", "MIDPOINT", {"timeperiod": 14}, ()),
    ("trend_midprice_14", "MIDPRICE", {"timeperiod": 14}, ()),
    ("trend_linearreg_14", "LINEARREG", {"timeperiod": 14}, ()),
    ("trend_linearreg_slope_14", "LINEARREG_SLOPE", {"timeperiod": 14}, ()),
    ("trend_linearreg_angle_14", "LINEARREG_ANGLE", {"timeperiod": 14}, ()),
    ("trend_tsf_14", "TSF", {"timeperiod": 14}, ()),
    ("trend_adx_14", "ADX", {"timeperiod": 14}, ()),
    ("trend_adxr_14", "ADXR", {"timeperiod": 14}, ()),
    ("trend_dx_14", "DX", {"timeperiod": 14}, ()),
    ("trend_plus_di_14", "PLUS_DI", {"timeperiod": 14}, ()),
    ("trend_minus_di_14", "MINUS_DI", {"timeperiod": 14}, ()),
    ("trend_aroon_14", "AROON", {"timeperiod": 14}, ("down", "up")),
    ("trend_aroonosc_14", "AROONOSC", {"timeperiod": 14}, ()),
    ("momentum_rsi_14", "RSI", {"timeperiod": 14}, ()),
    ("momentum_mom_10", "MOM", {"timeperiod": 10}, ()),
    ("momentum_roc_10", "ROC", {"timeperiod": 10}, ()),
    ("momentum_macd_12_26_9", "MACD", {"fastperiod": 12, "slowperiod": 26, "signalperiod": 9},
     ("macd", "signal", "hist")),
    ("momentum_ppo_12_26", "PPO", {"fastperiod": 12, "slowperiod": 26, "matype": SMA}, ()),
    ("momentum_apo_12_26", "APO", {"fastperiod": 12, "slowperiod": 26, "matype": SMA}, ()),
    ("momentum_cci_14", "CCI", {"timeperiod": 14}, ()),
    ("momentum_cmo_14", "CMO", {"timeperiod": 14}, ()),
    ("momentum_stoch_5_3_3", "STOCH", {"fastk_period": 5, "slowk_period": 3, "slowk_matype": SMA,
                                       "slowd_period": 3, "slowd_matype": SMA}, ("k", "d")),
    ("momentum_stochf_5_3", "STOCHF", {"fastk_period": 5, "fastd_period": 3, "fastd_matype": SMA}, ("k", "d")),
    ("momentum_stochrsi_14_5_3", "STOCHRSI", {"timeperiod": 14, "fastk_period": 5, "fastd_period": 3,
                                              "fastd_matype": SMA}, ("k", "d")),
    ("momentum_willr_14", "WILLR", {"timeperiod": 14}, ()),
    ("momentum_ultosc_7_14_28", "ULTOSC", {"timeperiod1": 7, "timeperiod2": 14, "timeperiod3": 28}, ()),
    ("momentum_trix_30", "TRIX", {"timeperiod": 30}, ()),
    ("momentum_bop", "BOP", {}, ()),
    ("volatility_atr_14", "ATR", {"timeperiod": 14}, ()),
    ("volatility_natr_14", "NATR", {"timeperiod": 14}, ()),
    ("volatility_trange", "TRANGE", {}, ()),
    ("volatility_bbands_20_2", "BBANDS", {"timeperiod": 20, "nbdevup": 2.0, "nbdevdn": 2.0, "matype": SMA},
     ("upper", "middle", "lower")),
    ("volatility_stddev_20", "STDDEV", {"timeperiod": 20, "nbdev": 1.0}, ()),
    ("volume_obv", "OBV", {}, ()),
    ("volume_ad", "AD", {}, ()),
    ("volume_adosc_3_10", "ADOSC", {"fastperiod": 3, "slowperiod": 10}, ()),
    ("volume_mfi_14", "MFI", {"timeperiod": 14}, ()),
    ("volume_sma_20", "SMA", {"timeperiod": 20, "price": "volume"}, ()),
    ("cycle_ht_dcperiod", "HT_DCPERIOD", {}, ()),
    ("cycle_ht_dcphase", "HT_DCPHASE", {}, ()),
    ("cycle_ht_phasor", "HT_PHASOR", {}, ("inphase", "quadrature")),
    ("cycle_ht_sine", "HT_SINE", {}, ("sine", "leadsine")),
    ("cycle_ht_trendmode", "HT_TRENDMODE", {}, ()),
)

COLUMNS: tuple[str, ...] = tuple(
    f"{stem}_{suffix}" if suffixes else stem for stem, _, _, suffixes in _SPEC for suffix in (suffixes or ("",))
)
INDICATORS = len(_SPEC)


def compute(bars: np.ndarray) -> pd.DataFrame:
    """Every feature for every bar of `bars` (BAR_DTYPE, consecutive minutes, oldest first):
    a DataFrame indexed by bar open time with the columns `COLUMNS`, NaN before a lookback."""
    inputs = {name: np.ascontiguousarray(bars[name], dtype=np.float64)
              for name in ("open", "high", "low", "close", "volume")}
    out: dict[str, np.ndarray] = {}
    for stem, function, params, suffixes in _SPEC:
        result = abstract.Function(function)(inputs, **params)
        if suffixes:
            out.update({f"{stem}_{s}": np.asarray(r, dtype=np.float64) for s, r in zip(suffixes, result, strict=True)})
        else:
            out[stem] = np.asarray(result, dtype=np.float64)
    return pd.DataFrame(out, index=pd.Index(bars["time"], name="time"), columns=list(COLUMNS))


def consecutive_starts(times: np.ndarray, window: int) -> np.ndarray:
    """Indices i where times[i : i + window] are `window` consecutive minutes."""
    times = np.asarray(times, dtype=np.int64)
    if window > len(times):
        return np.empty(0, dtype=np.int64)
    span = times[window - 1:] - times[: len(times) - window + 1]
    return np.flatnonzero(span == (window - 1) * 60)


def sample(bars: np.ndarray, n: int, window: int, rng: np.random.Generator) -> pd.DataFrame:
    """Features over `n` windows of `window` consecutive minutes drawn at random (without
    replacement of the start) from `bars`: one row per bar, columns `sample` (0..n-1), `time`,
    the bar's open/high/low/close/volume, then `COLUMNS`. Raises ValueError when history
    holds fewer than `n` distinct windows."""
    starts = consecutive_starts(bars["time"], window)
    if len(starts) < n:
        raise ValueError(f"history has {len(starts)} windows of {window} consecutive minutes, fewer than {n}")
    chosen = np.sort(rng.choice(starts, size=n, replace=False))
    frames = []
    for k, start in enumerate(chosen):
        part = bars[start:start + window]
        frame = compute(part).reset_index()
        frame.insert(0, "sample", k)
        for pos, name in enumerate(("open", "high", "low", "close", "volume"), start=2):
            frame.insert(pos, name, part[name])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_table(df: pd.DataFrame, path: Path) -> None:
    """Parquet (pyarrow) for .parquet, CSV for .csv / .csv.gz."""
    if path.suffix == ".parquet":
        df.to_parquet(path, engine="pyarrow", index=False)
    else:
        df.to_csv(path, index=False)
