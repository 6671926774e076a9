"""`adapt convert medical slake --option splits=test` and `pmc_vqa --option files=train.csv`: the converters read one
name as that split / file (tests/test_medical_convert.py calls them directly), but the command line's option check
refused the text first ("not a list such as [a, b]"). Run through the CLI, one name now converts that one."""

from __future__ import annotations

import pytest

from adapt.cli import main
from domains.medical.synthetic import generate


@pytest.mark.parametrize("dataset, option, outputs", [("slake", "splits=test", ["slake_test.jsonl"]),
                                                      ("pmc_vqa", "files=train.csv", ["pmc_vqa_train.jsonl"])])
def test_one_name_as_text_through_the_cli(tmp_path, dataset, option, outputs):
    generate(dataset, tmp_path / dataset, n=3, seed=1)
    out = tmp_path / "out"
    assert main(["convert", "medical", dataset, "--src", str(tmp_path / dataset), "--out", str(out),
                 "--option", option, "--no-progress"]) == 0
    assert sorted(p.name for p in out.glob("*.jsonl")) == outputs
