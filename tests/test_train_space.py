"""The search space: every mistake in a space file is one line naming its key; the box the
optimisers see decodes to values the config accepts; best.yaml is the config's own text with the
searched values in it (comments kept) and loads back to the trial's strategy."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from sniper import config
from sniper.backtest import space

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT / "configs" / "sim.yaml"

SPACE = """\
strategy.motif.window: {low: 30, high: 120, type: int}
strategy.motif.metric: {choices: [ed, dtw]}
strategy.trend.fast_period: {values: [1500, 500, 1054]}
strategy.motif.threshold: {low: 0.0005, high: 0.01, log: true}
strategy.motif.wavelet: {choices: [null, db4]}
strategy.funding.positive[0].enter_minutes: {low: 1, high: 10}
"""


@pytest.fixture(scope="module")
def cfg():
    return config.load(SIM)


def load(tmp_path, text, cfg):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return space.load(path, cfg)


def test_a_space_reads_as_its_parameters(tmp_path, cfg):
    sp = load(tmp_path, SPACE, cfg)
    assert sp.names == ["strategy.motif.window", "strategy.motif.metric", "strategy.trend.fast_period",
                        "strategy.motif.threshold", "strategy.motif.wavelet",
                        "strategy.funding.positive[0].enter_minutes"]
    window, metric, fast, threshold, wavelet, enter = sp.params
    assert (window.kind, window.low, window.high, window.bounds) == (int, 30, 120, (30.0, 120.0))
    assert metric.options == ("ed", "dtw") and metric.bounds == (0.0, 1.0)
    assert fast.options == (500, 1054, 1500)  # values are kept in order
    assert threshold.log and threshold.bounds == pytest.approx((-7.6009, -4.6052), abs=1e-4)
    assert wavelet.options == (None, "db4")
    assert enter.path == ("funding", "positive", 0, "enter_minutes")
    assert list(sp.integrality) == [True, True, True, False, True, True]


def test_decode_rounds_clips_and_inverts_encode(tmp_path, cfg):
    sp = load(tmp_path, SPACE, cfg)
    values = sp.decode([70.4, 0.6, 2.2, -5.0, 1.0, 12.0])
    assert values == (70, "dtw", 1500, 0.006738, "db4", 10)  # 4 significant digits; 12 clipped to 10
    assert sp.decode([29.0, -3, 9, -99, 0, 1])[:4] == (30, "ed", 1500, 0.0005)
    assert sp.decode(sp.encode(values)) == values


def test_grid_lists_options_and_integers_but_no_float_range(tmp_path, cfg):
    sp = load(tmp_path, "strategy.motif.k: {low: 2, high: 4}\nstrategy.motif.metric: {choices: [ed, dtw]}\n", cfg)
    assert sp.size() == 6
    assert list(sp.grid())[:3] == [(2, "ed"), (2, "dtw"), (3, "ed")]
    sp = load(tmp_path, SPACE, cfg)
    with pytest.raises(ValueError, match="strategy.motif.threshold is a range of numbers"):
        sp.size()


def test_apply_sets_the_values_and_builds_through_the_config_rules(tmp_path, cfg):
    sp = load(tmp_path, SPACE, cfg)
    trial = sp.apply(cfg, (70, "ed", 500, 0.004, None, 7))
    assert trial.strategy.motif.window == 70 and trial.strategy.motif.metric == "ed"
    assert trial.strategy.motif.threshold == 0.004 and trial.strategy.motif.wavelet is None
    assert trial.strategy.trend.fast_period == 500
    assert trial.strategy.funding.positive[0] == config.FundingBand(0.003, 7, True)
    assert trial.strategy.funding.positive[1:] == cfg.strategy.funding.positive[1:]
    assert dataclasses.replace(trial, strategy=cfg.strategy) == cfg  # nothing else changes
    assert cfg.strategy.motif.window == 62  # the base config is untouched
    with pytest.raises(config.ConfigError, match="strategy.motif.window: expected a value >= 4"):
        sp.apply(cfg, (2, "ed", 500, 0.004, None, 7))


def test_a_combination_the_strategy_refuses_is_infeasible(tmp_path, cfg):
    sp = load(tmp_path, SPACE, cfg)
    with pytest.raises(space.Infeasible, match="wavelet_level: 3 is deeper than a db4 DWT of 40 closes"):
        sp.apply(cfg, (40, "dtw", 500, 0.004, "db4", 3))
    assert sp.apply(cfg, (62, "dtw", 500, 0.004, "db4", 3)).strategy.motif.wavelet == "db4"


BAD = [
    ("strategy.motif.windw: {low: 10, high: 20}", "strategy.motif.windw: unknown key in strategy.motif (known keys: window, k"),
    ("exchange.symbol: {choices: [XBTUSD]}", "exchange.symbol: only strategy.* keys can be searched"),
    ("strategy.motif.window: {low: 2, high: 100}", "strategy.motif.window.low: expected a value >= 4, got 2"),
    ("strategy.motif.window: {low: 10, high: 20000}", "strategy.motif.window.high: expected a value <= 10000"),
    ("strategy.motif.window: {low: 50, high: 40}", "strategy.motif.window: low (50) must be below high (40)"),
    ("strategy.motif.window: {low: 5.5, high: 40}", "strategy.motif.window.low: expected an integer, got 5.5"),
    ("strategy.motif.window: {low: 10}", "strategy.motif.window.high: missing"),
    ("strategy.motif.window: {low: 10, high: 20, step: 2}", "strategy.motif.window.step: unknown field"),
    ("strategy.motif.window: {low: 10, high: 20, type: float}", "strategy.motif.window.type: the key holds an integer"),
    ("strategy.motif.window: {low: 10, high: 20, log: 1}", "strategy.motif.window.log: expected true or false"),
    ("strategy.motif.window: {low: 10, high: 20, choices: [1]}", "strategy.motif.window: give exactly one of"),
    ("strategy.motif.window: 10", "strategy.motif.window: expected {low: .., high: ..}"),
    ("strategy.motif.window: {values: []}", "strategy.motif.window.values: expected a non-empty list"),
    ("strategy.motif.window: {values: [5, 5]}", "strategy.motif.window.values: lists a value twice"),
    ("strategy.motif.threshold: {low: 0, high: 1, log: true}", "strategy.motif.threshold.low: expected a value > 0"),
    ("strategy.motif.dtw_window: {low: 0, high: 1, log: true}", "strategy.motif.dtw_window.log: a log scale needs low > 0"),
    ("strategy.motif.metric: {choices: [ed, xx]}", "strategy.motif.metric.choices[1]: expected one of ed, dtw, got 'xx'"),
    ("strategy.motif.metric: {low: 1, high: 2}", "strategy.motif.metric: a range needs a number key"),
    ("strategy.motif.style: {values: [market]}", "strategy.motif.style.values: the key holds a string"),
    ("strategy.funding.positive: {low: 1, high: 2}", "strategy.funding.positive: a table: search a key of one of its rows"),
    ("strategy.funding.positive[9].above: {low: 0.001, high: 0.002}", "has 5 rows in strategy.funding.positive"),
    ("strategy.funding.leverage[0]: {low: 1, high: 2}", "strategy.funding.leverage[0]: strategy.funding.leverage is not a table"),
    ("strategy.motif: {low: 1, high: 2}", "strategy.motif: a section: search one of its keys"),
    ("strategy.motif.window.x: {low: 1, high: 2}", "strategy.motif.window.x: strategy.motif.window is a single value"),
    ("[1, 2]", "expected a mapping of strategy keys"),
    ("", "expected a mapping of strategy keys"),
    ("a: [", "not valid YAML at line 1"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(BAD)])
def test_a_bad_space_is_one_line_naming_the_key(tmp_path, cfg, text, message):
    with pytest.raises(config.ConfigError) as info:
        load(tmp_path, text, cfg)
    line = str(info.value)
    assert line.startswith(f"{tmp_path / 'space.yaml'}: ") and message in line and "\n" not in line


def test_a_key_the_strategy_never_reads_is_refused_unless_the_name_is_searched(tmp_path):
    trend = dataclasses.replace(config.load(SIM), strategy=config.StrategyConfig(name="trend"))
    with pytest.raises(config.ConfigError, match="strategy.motif.window: has no effect: .* runs strategy.name trend"):
        load(tmp_path, "strategy.motif.window: {low: 10, high: 20}\n", trend)
    assert load(tmp_path, "strategy.trend.fast_period: {low: 10, high: 20}\n", trend).names
    assert load(tmp_path, "strategy.motif.window: {low: 10, high: 20}\n"
                          "strategy.name: {choices: [trend, motif]}\n", trend).names


def test_a_missing_space_file_is_one_line(tmp_path, cfg):
    with pytest.raises(config.ConfigError, match="space file not found"):
        space.load(tmp_path / "nope.yaml", cfg)


# ----------------------------------------------------------------------------- best.yaml

def rendered(tmp_path, text, sp_text, values):
    (tmp_path / "base.yaml").write_text(text)
    base = config.load(tmp_path / "base.yaml")
    sp = load(tmp_path, sp_text, base)
    trial = sp.apply(base, values)
    out = space.render(text, trial, sp)
    (tmp_path / "best.yaml").write_text(out)
    assert config.load(tmp_path / "best.yaml").strategy == trial.strategy
    return out


def test_render_replaces_values_in_place_and_keeps_every_comment(tmp_path):
    text = SIM.read_text()
    out = rendered(tmp_path, text, SPACE, (70, "ed", 1500, 0.006738, "db4", 7))
    changed = [(a, b) for a, b in zip(text.splitlines(), out.splitlines(), strict=True) if a != b]
    assert changed == [
        ("    fast_period: 1054    # EMA period over the closes", "    fast_period: 1500    # EMA period over the closes"),
        ("      - {above: 0.0030, enter_minutes: 3, reverse: true}   # |rate| > 0.30 %: short 3 min before, go long after",
         "      - {above: 0.0030, enter_minutes: 7, reverse: true}   # |rate| > 0.30 %: short 3 min before, go long after"),
        ("    window: 62           # L: closes in a motif", "    window: 70           # L: closes in a motif"),
        ("    metric: dtw          # ed | dtw (dynamic time warping)", "    metric: ed           # ed | dtw (dynamic time warping)"),
        ("    threshold: 0.002     # |forecast| (relative move over H) above which the short-term logic takes control",
         "    threshold: 0.006738  # |forecast| (relative move over H) above which the short-term logic takes control"),
        (changed[5][0], changed[5][0].replace("wavelet: null        #", "wavelet: db4         #")),
    ]


def test_render_adds_the_keys_a_file_leaves_out_to_their_sections(tmp_path):
    text = ("exchange:\n  base_url: sim   # the simulator\nstrategy:\n  name: motif  # keep me\n"
            "  trend:\n    leverage: 2\n# the end\n")
    out = rendered(tmp_path, text, "strategy.trend.fast_period: {values: [500, 900]}\n"
                                   "strategy.motif.window: {low: 30, high: 90}\n"
                                   "strategy.motif.k: {low: 2, high: 9}\n", (900, 40, 7))
    assert out == ("exchange:\n  base_url: sim   # the simulator\nstrategy:\n  name: motif  # keep me\n"
                   "  trend:\n    leverage: 2\n    fast_period: 900\n  motif:\n    window: 40\n    k: 7\n# the end\n")


def test_render_writes_a_missing_table_whole(tmp_path):
    out = rendered(tmp_path, "exchange:\n  base_url: sim\n", "strategy.funding.negative[1].enter_minutes: "
                                                           "{low: 1, high: 9}\n", (2,))
    doc = yaml.safe_load(out)
    assert [row["enter_minutes"] for row in doc["strategy"]["funding"]["negative"]] == [3, 2, 7, 8, 10]


def test_render_falls_back_to_the_whole_file_where_a_section_is_flow_style(tmp_path):
    out = rendered(tmp_path, "exchange: {base_url: sim}\nstrategy: {name: motif}  # flow\n",
                   "strategy.motif.k: {low: 2, high: 9}\n", (5,))
    assert "# flow" not in out and yaml.safe_load(out)["strategy"]["motif"]["k"] == 5
