"""`adapt validate` names the records it skipped (file:line and why) when they stay under data.max_bad_fraction:
it said only how many, so finding them meant running adapt train for its skips.md."""

from adapt.cli import main
from tests.test_validate_mixing_plan import run  # noqa: F401  (the fixture)


def test_validate_names_each_kind_of_skipped_record_under_the_limit(run, capsys):  # noqa: F811
    train = run.parent / "data" / "landcover" / "train.jsonl"
    with open(train, "a", encoding="utf-8") as f:
        f.write("not json\n")
    assert main(["validate", str(run), "data.max_bad_fraction=0.5"]) == 0
    err = capsys.readouterr().err
    assert "reading skipped 1 record(s)" in err and "would stop" not in err
    assert "| landcover | invalid JSON | 1 | " in err and "train.jsonl:31: " in err


def test_over_the_limit_the_table_is_shown_once(run, capsys):  # noqa: F811
    with open(run.parent / "data" / "landcover" / "train.jsonl", "a", encoding="utf-8") as f:
        f.write("not json\n")
    assert main(["validate", str(run), "data.max_bad_fraction=0.01"]) == 0
    err = capsys.readouterr().err
    assert "adapt train would stop: too many bad records" in err and err.count("| landcover | invalid JSON |") == 1
