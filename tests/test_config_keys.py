"""Every config key is read by the code it configures: a key that nothing reads is a promise
the program does not keep (a user would set it and see no effect)."""

import dataclasses
import re
import typing
from pathlib import Path

from sniper import config

PACKAGE = Path(__file__).resolve().parents[1] / "sniper"


def keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        path = f"{prefix}{f.name}"
        yield path, f.name
        tp = hints[f.name]
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
        if dataclasses.is_dataclass(item):
            yield from keys(item, path + ".")


def test_every_config_key_is_read_somewhere():
    code = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    unread = [path for path, name in keys(config.Config) if not re.search(rf"\.{name}\b", code)]
    assert not unread, f"config keys no code reads: {unread}"


def test_the_check_sees_an_unread_key():
    @dataclasses.dataclass(frozen=True)
    class Probe:
        a_key_nothing_reads_at_all: int = 0

    code = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    assert not re.search(r"\.a_key_nothing_reads_at_all\b", code)
    assert [p for p, _ in keys(Probe)] == ["a_key_nothing_reads_at_all"]
