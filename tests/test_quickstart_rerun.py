"""A quick start interrupted while it writes its synthetic data can be run again without --force."""

from __future__ import annotations

import pytest

import adapt.quickstart as qs


def test_a_quickstart_interrupted_while_writing_its_data_runs_again(tmp_path, monkeypatch):
    """Ctrl-C during `[1/4] generating data` left data/general half written and unstamped; the rerun then refused
    it as "not written by a quick start" and asked for --force (which also drops every other safeguard)."""
    out = tmp_path / "qs"

    def interrupted(data, progress):
        (data / "general").mkdir(parents=True, exist_ok=True)
        (data / "general" / "train.jsonl").write_text("{}\n")  # half of what the generator writes
        raise KeyboardInterrupt

    monkeypatch.setitem(qs.FIELDS, "landcover", ("quickstart", interrupted))
    with pytest.raises(KeyboardInterrupt):
        qs.quickstart(out, progress=False)
    qs._refuse_to_replace_data(out, "landcover")  # the rerun may replace what the first one wrote
    with pytest.raises(KeyboardInterrupt):
        qs.prepare_data(out, "landcover", progress=False)
    qs._refuse_to_replace_data(out, "landcover")


def test_an_out_folder_with_a_yaml_comment_sign_trains_there(tmp_path, monkeypatch):
    """`--out "runs/exp #2"`: OUT/train went into the output.dir override unquoted, so YAML read " #2/train" as a
    comment: the quick start emptied (and would have trained into) the sibling folder runs/exp."""
    out = tmp_path / "exp #2"
    sibling = tmp_path / "exp"
    sibling.mkdir()
    (sibling / "precious.txt").write_text("mine")

    class Stop(Exception):
        pass

    seen = []

    def stop(recipe, *args, **kwargs):
        seen.append(recipe.output.dir)
        raise Stop

    monkeypatch.setitem(qs.FIELDS, "landcover", ("quickstart", lambda data, progress=True: None))
    monkeypatch.setattr(qs, "evaluate_model", stop)
    with pytest.raises(Stop):
        qs.quickstart(out, progress=False)
    assert (sibling / "precious.txt").is_file()
    assert seen == [(out / "train").resolve()]
