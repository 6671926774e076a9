"""`adapt quickstart --help` says what it writes and explains every --field it offers."""

from adapt.cli import build_parser


def test_quickstart_help_describes_every_field_and_what_it_writes():
    """It explained landcover and remote_sensing only, and had no description of what starting over writes."""
    text = " ".join(build_parser().verb_parsers["quickstart"].format_help().split())
    for field in ("landcover:", "remote_sensing:", "driving:", "medical:"):
        assert field in text
    assert "OUT/train" in text and "OUT/report" in text and "see --force" in text
