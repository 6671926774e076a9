"""``adapt convert remote_sensing ... --option bands=B4,B3,B2`` (the README's notation, and the form the converters'
own bands reader parses) was refused by the option check as "not a list such as [a, b]"; only ``bands=[...]``
passed. Text is read as the demo and ``adapt chat --read-option`` read it: names or indexes, comma-separated."""

from __future__ import annotations

import pytest

from adapt.cli import main
from tests.converted import records
from tests.deps import require


def _synthesized(tmp_path, dataset: str, n: int):
    """The synthetic raw folder of one remote-sensing data set, through the CLI."""
    require("rasterio", "the synthetic GeoTIFFs")
    raw = tmp_path / "raw"
    assert main(["synthesize", "remote_sensing", "--out", str(raw), "--option", f"kinds=[{dataset}]",
                 "--option", f"n={n}"]) == 0
    return raw / dataset


@pytest.mark.parametrize("dataset, bands", [("eurosat_ms", "B4,B3,B2"), ("ucmerced", "3,2,1")])
def test_bands_given_as_text_convert(tmp_path, capsys, dataset, bands):
    src = _synthesized(tmp_path, dataset, 1)
    out = tmp_path / "out"
    assert main(["convert", "remote_sensing", dataset, "--src", str(src), "--out", str(out),
                 "--option", f"bands={bands}", "--option", "test_fraction=0"]) == 0
    assert len(records(out / f"{dataset}_train.jsonl")) > 0 and "skipped" not in capsys.readouterr().out


def test_two_bands_as_text_are_refused_naming_the_option(tmp_path, capsys):
    src = _synthesized(tmp_path, "eurosat_ms", 1)
    assert main(["convert", "remote_sensing", "eurosat_ms", "--src", str(src), "--out",
                 str(tmp_path / "out"), "--option", "bands=B4,B3"]) != 0
    assert "bands: give one band (grey) or three (red, green, blue)" in capsys.readouterr().err


@pytest.mark.parametrize("dataset, option, written", [("dior_rsvg", "tasks=grounding", {"grounding"}),
                                                      ("rsvqa_lr", "splits=train,val", {"train", "val"})])
def test_other_list_options_as_text(tmp_path, dataset, option, written):
    """The DIOR-RSVG converter's `tasks` and the RSVQA converter's `splits` are comma-separated text to the
    converters (as nuScenes' `tasks=grounding`), yet the option check refused text for them too."""
    src = _synthesized(tmp_path, dataset, 4)
    out = tmp_path / "out"
    assert main(["convert", "remote_sensing", dataset, "--src", str(src), "--out", str(out),
                 "--option", option]) == 0
    rows = [r for path in sorted(out.glob(f"{dataset}_*.jsonl")) for r in records(path)]
    seen = {r["task"] for r in rows} if option.startswith("tasks") else {r["meta"]["split"] for r in rows}
    assert rows and seen == written
