"""DriveLM per-sample scores and the corpus-level aggregate (without a judge; see test_driving_judge.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from domains.driving import layout
from domains.driving.language import coco_scores
from domains.driving.metrics import (
    METRICS,
    aggregate_drivelm,
    answer_accuracy,
    final_score,
    language_score,
    match_points,
    pixel_points,
    score_drivelm,
    to_camera_pixels,
)


def stitched_tag(obj: int, camera: str, x: float, y: float) -> str:
    xn, yn = layout.to_stitched(x, y, camera)
    return layout.render_ctag(obj, camera, xn, yn)


def multi_tag(obj: int, camera: str, x: float, y: float) -> str:
    xn, yn = layout.to_camera_grid(x, y, camera)
    return layout.render_ctag(obj, camera, xn, yn)


def pred(prediction: str, tag, answer_pixels: str, mode: str = "stitched", **meta):
    meta = {"drivelm_tag": tag, "view_mode": mode, "answer_pixels": answer_pixels, **meta}
    return SimpleNamespace(prediction=prediction, reference="", meta=meta, task="drivelm", scores={})


# --------------------------------------------------------------------------------------------- pieces
def test_accuracy_is_exact_with_letters_for_multiple_choice():
    assert answer_accuracy(" Yes. ", "Yes.") == 1.0
    assert answer_accuracy("Yes", "Yes.") == 0.0  # the official scorer compares strings exactly
    assert answer_accuracy("yes.", "Yes.") == 0.0
    for ok in ("B", "b", "(B)", "B.", "B. Turn right.", "B) Turn right"):
        assert answer_accuracy(ok, "B") == 1.0, ok
    for wrong in ("C", "C. Turn left.", "Bravo", "A car turns right", ""):
        assert answer_accuracy(wrong, "B") == 0.0, wrong


def test_grid_tags_go_back_to_camera_pixels_like_post_process():
    text = f"Notice {stitched_tag(1, 'CAM_BACK', 1088.3, 497.5)} and {stitched_tag(2, 'CAM_FRONT_LEFT', 12.0, 880.0)}."
    assert to_camera_pixels(text, "stitched") == "Notice <c1,CAM_BACK,1088.3,497.5> and <c2,CAM_FRONT_LEFT,12.0,880.0>."
    text = f"{multi_tag(3, 'CAM_BACK_RIGHT', 1600.0, 0.0)}"
    assert to_camera_pixels(text, "multi") == "<c3,CAM_BACK_RIGHT,1600.0,0.0>"
    # unbracketed tags are camera pixels already; unknown cameras are left alone
    assert to_camera_pixels("<c1,CAM_BACK,10.5,20.5> <c2,CAM_TOP,[1,2]>") == "<c1,CAM_BACK,10.5,20.5> <c2,CAM_TOP,[1,2]>"
    # a stitched grid point beyond the named camera's cell is clamped to that camera's frame
    assert to_camera_pixels("<c1,CAM_FRONT,[900,100]>") == "<c1,CAM_FRONT,1600.0,180.0>"
    with pytest.raises(ValueError, match="view mode"):
        to_camera_pixels("x", "panorama")


def test_match_points_greedy_l1_within_16px_and_same_camera():
    gt = [("CAM_BACK", 100.0, 100.0), ("CAM_BACK", 300.0, 300.0), ("CAM_FRONT", 500.0, 500.0)]
    matched, f1 = match_points([("CAM_BACK", 108.0, 107.9), ("CAM_FRONT", 500.0, 500.0)], gt)
    assert matched == [gt[0], gt[2]]
    assert f1 == pytest.approx(2 * 1.0 * (2 / 3) / (1.0 + 2 / 3), abs=1e-6)
    # L1 distance 16 is not < 16; the same point in another camera never matches
    assert match_points([("CAM_BACK", 108.0, 108.0)], gt[:1])[1] == pytest.approx(0.0)
    assert match_points([("CAM_FRONT", 100.0, 100.0)], gt[:1])[1] == pytest.approx(0.0)
    # greedy in prediction order: the first prediction takes the nearest point, the second gets nothing left
    matched, f1 = match_points([("CAM_BACK", 105.0, 100.0), ("CAM_BACK", 100.0, 100.0)], gt[:1])
    assert matched == [gt[0]] and f1 == pytest.approx(2 / 3, abs=1e-6)
    assert match_points([], [])[1] == 0.0
    assert pixel_points(f"{stitched_tag(1, 'CAM_BACK', 1088.3, 497.5)}", "stitched") == [("CAM_BACK", 1088.3, 497.5)]


def test_language_and_final_score_formulas():
    m = {"Bleu_1": 0.8, "Bleu_2": 0.6, "Bleu_3": 0.4, "Bleu_4": 0.2, "ROUGE_L": 0.5, "CIDEr": 3.0}
    assert language_score(m) == pytest.approx(0.5 / 3 + 0.5 / 3 + 0.3 / 3)
    assert final_score(chatgpt=70.0, language=0.4, match=50.0, accuracy=0.9) == pytest.approx(
        0.4 * 0.7 + 0.2 * 0.4 + 0.2 * 0.5 + 0.2 * 0.9)


# --------------------------------------------------------------------------------------------- per sample
def test_score_drivelm_by_tag():
    assert METRICS == {"drivelm": score_drivelm}
    assert score_drivelm.aggregate is aggregate_drivelm
    assert aggregate_drivelm.main_metric == "final_score"
    assert aggregate_drivelm.fallback_main_metric == "final_score_no_judge"

    record = {"meta": {"drivelm_tag": 0, "view_mode": "stitched", "answer_pixels": "A"}}
    assert score_drivelm("A. Going ahead.", record, "A") == {"accuracy": 1.0}
    answer = "<c1,CAM_BACK,1088.3,497.5> and <c2,CAM_FRONT,800.0,450.0>"
    record = SimpleNamespace(meta={"drivelm_tag": [3], "view_mode": "multi", "answer_pixels": answer})
    prediction = f"{multi_tag(1, 'CAM_BACK', 1090.0, 500.0)} and {multi_tag(2, 'CAM_FRONT_LEFT', 800.0, 450.0)}"
    assert score_drivelm(prediction, record, "ignored") == {"match_f1": pytest.approx(0.5, abs=1e-6)}
    record = {"meta": {"drivelm_tag": 2, "view_mode": "stitched", "answer_pixels": "There is a car."}}
    assert score_drivelm("There is a car.", record, "")["ROUGE_L"] == pytest.approx(1.0)
    assert score_drivelm("x", {"meta": {"drivelm_tag": 1}}, "y") == {}
    # without answer_pixels the reference's grid tags are mapped back
    record = {"meta": {"drivelm_tag": 3, "view_mode": "stitched"}}
    tag = stitched_tag(1, "CAM_BACK", 1088.3, 497.5)
    assert score_drivelm(tag, record, tag)["match_f1"] == pytest.approx(1.0, abs=1e-6)


def test_score_drivelm_rejects_broken_meta_naming_the_sample():
    with pytest.raises(ValueError, match=r"s_f_3.*drivelm_tag"):
        score_drivelm("x", {"meta": {"qa_id": "s_f_3"}}, "y")
    with pytest.raises(ValueError, match="drivelm_tag"):
        score_drivelm("x", {"meta": {"drivelm_tag": 7}}, "y")
    with pytest.raises(ValueError, match="view_mode"):
        score_drivelm("x", {"meta": {"drivelm_tag": 0, "view_mode": "fisheye"}}, "y")


# --------------------------------------------------------------------------------------------- corpus
def corpus():
    important = "There is a white sedan to the front of the ego vehicle. The ID of this object is {}."
    return [
        pred("B", 0, "B"),
        pred("No.", 0, "Yes."),
        pred("Yes.", 0, "Yes."),
        pred("Slow down.", 1, "Keep going at the same speed."),
        pred(important.format(stitched_tag(1, "CAM_FRONT", 812.5, 487.3)), 2,
             important.format("<c1,CAM_FRONT,815.0,490.0>")),
        pred("There is a green light to the front of the ego vehicle.", 2,
             "There is a red light to the front of the ego vehicle."),
        pred(f"{stitched_tag(1, 'CAM_BACK', 1090.0, 500.0)} is at the back of {stitched_tag(2, 'CAM_BACK', 500, 500)}",
             3, "<c1,CAM_BACK,1088.3,497.5> is at the back of <c2,CAM_BACK,864.2,468.3>"),
        pred(f"{stitched_tag(1, 'CAM_FRONT', 100.0, 100.0)}", 3, "<c1,CAM_FRONT,100.0,100.0>"),
        SimpleNamespace(prediction="ignored", reference="x", meta={}, task="vqa", scores={}),
    ]


def test_aggregate_without_judge_reports_none_and_the_judge_free_part():
    out = aggregate_drivelm(corpus(), {"judge": None})
    assert out["accuracy"] == pytest.approx(2 / 3)
    f1_first = 2 * 0.5 * 0.5 / (0.5 + 0.5)
    assert out["match_f1"] == pytest.approx((f1_first + 1.0) / 2, abs=1e-6)
    lang = coco_scores(
        ["There is a white sedan to the front of the ego vehicle. The ID of this object is <c1,CAM_FRONT,812.5,487.3>.",
         "There is a green light to the front of the ego vehicle."],
        ["There is a white sedan to the front of the ego vehicle. The ID of this object is <c1,CAM_FRONT,815.0,490.0>.",
         "There is a red light to the front of the ego vehicle."])
    for key, value in lang.items():
        assert out[key] == pytest.approx(value)
    assert out["language"] == pytest.approx(language_score(lang))
    assert out["chatgpt"] is None and out["match"] is None and out["final_score"] is None
    assert out["final_score_no_judge"] == pytest.approx(
        0.2 * out["language"] + 0.2 * out["accuracy"] + 0.1 * out["match_f1"])
    notes = " ".join(out["notes"])
    assert "LLM-judge term not computed" in notes and "final_score_no_judge = 0.2*language" in notes
    assert "not bit-identical" in notes and "graph filter not applied" in notes
    assert "3 accuracy (tag 0), 1 chatgpt (tag 1), 2 language (tag 2), 2 match (tag 3)" in notes
    assert list(out)[:13] == ["accuracy", "match_f1", "Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr",
                              "language", "chatgpt", "match", "final_score", "final_score_no_judge"]


def test_aggregate_says_what_is_missing():
    out = aggregate_drivelm([pred("Yes.", 0, "Yes.")], {})
    assert out["accuracy"] == 1.0
    assert out["Bleu_1"] is None and out["language"] is None and out["match_f1"] is None
    assert out["final_score_no_judge"] is None
    notes = " ".join(out["notes"])
    assert "no tag-2 samples" in notes and "no tag-3 samples" in notes and "final_score_no_judge not computed" in notes
    broken = SimpleNamespace(prediction="x", reference="y", meta={"qa_id": "a_b_1"}, task="drivelm", scores={})
    out = aggregate_drivelm([broken, pred("Yes.", 0, "Yes.")], {})
    assert out["accuracy"] == 1.0 and any("1 predictions without a valid" in n for n in out["notes"])


def test_graph_filter_drops_questions_about_unmatched_objects():
    first = "<c1,CAM_BACK,1088.3,497.5>, <c2,CAM_FRONT,800.0,450.0>"
    rows = [
        # the frame's first QA: the prediction finds c1 but misses c2
        pred(stitched_tag(1, "CAM_BACK", 1088.3, 497.5), 2, first, qa_id="s_f_0", scene="s", frame="f"),
        pred("Yes.", 0, "Yes.", qa_id="s_f_4", scene="s", frame="f",
             question_pixels="Is <c1,CAM_BACK,1088.3,497.5> moving?"),
        pred("Yes.", 0, "No.", qa_id="s_f_5", scene="s", frame="f",
             question_pixels="Is <c2,CAM_FRONT,800.0,450.0> moving?"),
    ]
    assert aggregate_drivelm(rows, {})["accuracy"] == pytest.approx(0.5)
    filtered = aggregate_drivelm(rows, {"graph_filter": True})
    assert filtered["accuracy"] == 1.0
    assert any("graph filter applied: 1 of 3" in n for n in filtered["notes"])
