"""A scorer's NaN or infinite score is one unscorable sample, not a source whose every mean reads "not computed"."""

from __future__ import annotations

import json

import pytest

from adapt.evaluate import predict, summarize, write_report
from tests.test_evaluate import Rec, tiny, turns  # noqa: F401  (tiny: the fixture)


def test_a_non_finite_score_skips_its_sample_naming_the_metric(tiny, tmp_path):  # noqa: F811
    """A registered scorer that gave NaN for one answer made its whole source's mean NaN: eval.md showed "—" (the
    mark of a metric not computed) for the source and its group, and eval.json held NaN, which JSON does not allow."""
    from adapt.metrics import register_task, unregister_task

    vlm, processor = tiny
    register_task("nan_task", lambda pred, rec, ref: {"hit": float("nan") if rec.line == 2 else 1.0})
    try:
        recs = [Rec("s", line, turns("Name a colour.", "red"), task="nan_task") for line in (1, 2, 3)]
        with pytest.warns(UserWarning, match=r"skipped 1 of 3"):
            preds = predict(vlm, processor, recs, max_new_tokens=2, batch_size=2, progress=False)
        assert [p.line for p in preds] == [1, 3]
        (skip,) = preds.skipped
        assert (skip.line, skip.kind) == (2, "reference its task cannot score") and "hit = nan" in skip.reason
        json_path, md_path = write_report(tmp_path, {"base": summarize(preds)})
        assert json.loads(json_path.read_text(encoding="utf-8"), parse_constant=pytest.fail)
        assert "| s | domain | 2 | 1.000 |" in md_path.read_text(encoding="utf-8")
    finally:
        unregister_task("nan_task")
