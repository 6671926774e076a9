"""DriveLM per-sample scores and the corpus-level aggregate (without a judge; see test_driving_judge.py), under
the official protocol (challenge/evaluation.py's rules, the default) and the lenient pocket one."""

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
    official_points,
    pixel_points,
    protocols,
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
def test_official_accuracy_is_exact_string_equality():
    assert answer_accuracy("Yes.", "Yes.") == answer_accuracy("D", "D") == 1.0
    # evaluation.py compares answer == GT: no stripping, no case folding, no option-letter parsing
    for wrong in (" Yes.", "Yes. ", "Yes", "yes."):
        assert answer_accuracy(wrong, "Yes.") == 0.0, wrong
    for wrong in ("D. Turn left.", "D.", "(D)", "d", " D"):
        assert answer_accuracy(wrong, "D") == answer_accuracy(wrong, "D", "official") == 0.0, wrong
    with pytest.raises(ValueError, match="official, pocket"):
        answer_accuracy("D", "D", "lenient")


def test_pocket_accuracy_strips_and_reads_option_letters():
    assert answer_accuracy(" Yes. ", "Yes.", "pocket") == 1.0
    assert answer_accuracy("Yes", "Yes.", "pocket") == 0.0
    assert answer_accuracy("yes.", "Yes.", "pocket") == 0.0
    for ok in ("B", "b", "(B)", "B.", "B. Turn right.", "B) Turn right"):
        assert answer_accuracy(ok, "B", "pocket") == 1.0, ok
    for wrong in ("C", "C. Turn left.", "Bravo", "A car turns right", ""):
        assert answer_accuracy(wrong, "B", "pocket") == 0.0, wrong


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
    # an unknown camera's grid point has no cell to map from: skipped, never its 0-1000 values taken as pixels
    text = f"<c1,CAM_TOP,[500,750]> {stitched_tag(2, 'CAM_BACK', 800.0, 450.0)} <c3,cam_back,[10,10]>"
    assert pixel_points(text, "stitched") == [("CAM_BACK", 800.0, 450.0)]
    assert pixel_points("<c1,CAM_TOP,[500,750]> <c2,CAM_BACK,[500,500]>", "multi") == [("CAM_BACK", 800.0, 450.0)]
    assert pixel_points("<c1,CAM_TOP,10.5,20.5>", "stitched") == [("CAM_TOP", 10.5, 20.5)]  # pixels as written
    with pytest.raises(ValueError, match="view mode"):  # was read as a multi-image grid
        pixel_points(f"{stitched_tag(1, 'CAM_BACK', 1088.3, 497.5)}", "Stitched")


def test_official_points_are_decimal_pairs_and_match_across_cameras():
    text = "<c1,CAM_BACK,1088.3,497.5> and <c2,CAM_FRONT,800.0,450.0>"
    assert official_points(text) == ([(None, 1088.3, 497.5), (None, 800.0, 450.0)], False)
    # the official regex reads \d+\.\d+ only: integer coordinates are no points, other decimals are
    assert official_points("<c1,CAM_BACK,1088,497>") == ([], False)
    assert official_points("at 5.5 m/s, <c1,CAM_BACK,1088.3,497.5>") == ([(None, 5.5, 1088.3)], True)
    # an odd last number is dropped
    assert official_points("1.5 2.5 3.5") == ([(None, 1.5, 2.5)], True)
    # the official rule ignores cameras: the same pixel in another camera is a hit
    gt = [("CAM_BACK", 100.0, 100.0)]
    assert match_points([("CAM_FRONT", 100.0, 100.0)], gt, by_camera=False)[1] == pytest.approx(1.0, abs=1e-6)
    assert match_points([("CAM_FRONT", 100.0, 100.0)], gt)[1] == pytest.approx(0.0)
    assert match_points([("CAM_BACK", 108.0, 108.0)], gt, by_camera=False)[1] == pytest.approx(0.0)  # 16 is not < 16


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

    # per sample, the official rules: exact accuracy, match F1 across cameras
    record = {"meta": {"drivelm_tag": 0, "view_mode": "stitched", "answer_pixels": "A"}}
    assert score_drivelm("A", record, "A") == {"accuracy": 1.0}
    assert score_drivelm("A. Going ahead.", record, "A") == {"accuracy": 0.0}
    answer = "<c1,CAM_BACK,1088.3,497.5> and <c2,CAM_FRONT,800.0,450.0>"
    record = SimpleNamespace(meta={"drivelm_tag": [3], "view_mode": "multi", "answer_pixels": answer})
    prediction = f"{multi_tag(1, 'CAM_BACK', 1090.0, 500.0)} and {multi_tag(2, 'CAM_FRONT_LEFT', 800.0, 450.0)}"
    assert score_drivelm(prediction, record, "ignored") == {"match_f1": pytest.approx(1.0, abs=1e-6)}
    assert score_drivelm.protocols == protocols("official")
    record = {"meta": {"drivelm_tag": 2, "view_mode": "stitched", "answer_pixels": "There is a car."}}
    assert score_drivelm("There is a car.", record, "")["ROUGE_L"] == pytest.approx(1.0)
    assert score_drivelm("x", {"meta": {"drivelm_tag": 1}}, "y") == {}
    # no reference answer (q_only): no per-sample score, as the aggregate leaves the sample out
    for tag in (0, 2, 3):
        assert score_drivelm("", {"meta": {"drivelm_tag": tag, "answer_pixels": ""}}, "") == {}
        assert score_drivelm("A", {"meta": {"drivelm_tag": tag}}, "  ") == {}
    # without answer_pixels the reference's grid tags are mapped back
    record = {"meta": {"drivelm_tag": 3, "view_mode": "stitched"}}
    tag = stitched_tag(1, "CAM_BACK", 1088.3, 497.5)
    assert score_drivelm(tag, record, tag)["match_f1"] == pytest.approx(1.0, abs=1e-6)


def test_score_drivelm_rejects_broken_meta_naming_the_sample():
    with pytest.raises(ValueError, match=r"s_f_3.*drivelm_tag"):
        score_drivelm("x", {"meta": {"qa_id": "s_f_3"}}, "y")
    with pytest.raises(ValueError, match="drivelm_tag"):
        score_drivelm("x", {"meta": {"drivelm_tag": 7}}, "y")
    for bad in (1.7, True, [0, 2.5], float("nan"), float("inf")):  # never truncated into a tag
        with pytest.raises(ValueError, match="drivelm_tag"):
            score_drivelm("x", {"meta": {"drivelm_tag": bad}}, "y")
    assert score_drivelm("y", {"meta": {"drivelm_tag": 0.0}}, "y") == {"accuracy": 1.0}  # a whole float still counts
    assert score_drivelm("y", {"meta": {"drivelm_tag": "0"}}, "y") == {"accuracy": 1.0}
    with pytest.raises(ValueError, match="view_mode"):
        score_drivelm("x", {"meta": {"drivelm_tag": 0, "view_mode": "fisheye"}}, "y")


def test_a_sample_without_view_mode_is_read_by_its_images():
    """A record without meta['view_mode'] (an older or a foreign converter's) was read as stitched: the grid c-tags
    of six camera images went through the stitched layout, so every point landed in the wrong place. Its images
    tell the mode now; where they do not, only a sample whose grid tags need it is refused, naming it."""
    answer = "<c1,CAM_BACK,1088.3,497.5> and <c2,CAM_FRONT_LEFT,200.0,100.0>"
    points = [("CAM_BACK", 1088.3, 497.5), ("CAM_FRONT_LEFT", 200.0, 100.0)]
    meta = {"drivelm_tag": 3, "qa_id": "s_f_7", "answer_pixels": answer}
    multi = " and ".join(multi_tag(k, cam, x, y) for k, (cam, x, y) in enumerate(points, 1))
    stitched = " and ".join(stitched_tag(k, cam, x, y) for k, (cam, x, y) in enumerate(points, 1))
    six = {"images": [f"{cam}.jpg" for cam in layout.STITCH_ORDER], "image_sizes": [layout.CAMERA_SIZE] * 6}
    for prediction, record in (
        (multi, {**six, "meta": meta}),
        (multi, {"image": six["images"], "meta": meta}),  # a converter's JSONL record
        (stitched, {"images": ["f.png"], "image_sizes": [layout.STITCHED_SIZE], "meta": meta}),
        (stitched, {"image": "f.jpg", "width": 1344, "height": 448, "meta": meta}),  # a smaller 3:1 frame
        (multi_tag(1, "CAM_BACK", 1088.3, 497.5),  # one camera picture: its tags are on its own grid
         {"images": ["b.jpg"], "image_sizes": [layout.CAMERA_SIZE],
          "meta": {**meta, "camera": "CAM_BACK", "answer_pixels": answer.split(" and ")[0]}}),
    ):
        assert score_drivelm(prediction, record, "")["match_f1"] == pytest.approx(1.0, abs=1e-6), record
    assert score_drivelm(stitched, {**six, "meta": meta}, "")["match_f1"] == 0.0  # multi is no longer guessed
    camera_sized = {"images": ["c.jpg"], "image_sizes": [layout.CAMERA_SIZE], "meta": meta}  # 16:9, no meta.camera
    with pytest.raises(ValueError, match=r"s_f_7.*view_mode"):
        score_drivelm(multi, camera_sized, "")
    assert score_drivelm("Yes.", {**camera_sized, "meta": {**meta, "drivelm_tag": 0, "answer_pixels": "Yes."}},
                         "") == {"accuracy": 1.0}  # no grid coordinates: the mode does not matter

    # the aggregate sees predictions, whose question holds one <image> per image of the record
    def unnamed(prediction: str, prompt: str) -> SimpleNamespace:
        return SimpleNamespace(prediction=prediction, reference="", meta=meta, task="drivelm", scores={},
                               prompt=prompt + "Where are the objects?")

    out = aggregate_drivelm([unnamed(multi, layout.multi_view_prefix()), unnamed(stitched, layout.STITCHED_PREFIX),
                             unnamed(multi, "")], {"protocol": "pocket"})
    assert out["match_f1"] == pytest.approx(1.0, abs=1e-6)
    assert "1 predictions without a valid meta['drivelm_tag'] / meta['view_mode'] were left out" in out["notes"]


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
    out = aggregate_drivelm(corpus(), {"judge": None})  # the official protocol by default
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
    assert "DriveLM protocol: official" in notes and "port of the official Java PTBTokenizer" in notes
    # the graph filter is on, but these samples name no frame
    assert "graph filter (official rule) applied: 0 of 8" in notes and "8 samples without meta['scene']" in notes
    assert "3 accuracy (tag 0), 1 chatgpt (tag 1), 2 language (tag 2), 2 match (tag 3)" in notes
    assert list(out)[:13] == ["accuracy", "match_f1", "Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr",
                              "language", "chatgpt", "match", "final_score", "final_score_no_judge"]
    assert out["protocols"] == protocols("official")
    assert out["protocols"]["accuracy"]["source"] == "OpenDriveLab/DriveLM challenge/evaluation.py (eval_acc)"


def test_protocols_differ_where_the_issue_says():
    glued = "There is a car to the front of the ego vehicle.The car is moving."
    spaced = "There is a car to the front of the ego vehicle. The car is moving."
    rows = [
        pred("D. Turn left.", 0, "D"),
        pred(" Yes.", 0, "Yes."),
        # the right pixel, the wrong camera
        pred("<c1,CAM_FRONT,1088.3,497.5>", 3, "<c1,CAM_BACK,1088.3,497.5>"),
        pred(glued, 2, spaced),
        pred("There is a truck to the back of the ego vehicle.", 2, "There is a truck to the back of the ego vehicle."),
    ]
    official = aggregate_drivelm(rows, {"protocol": "official"})
    pocket = aggregate_drivelm(rows, {"protocol": "pocket"})
    assert official["accuracy"] == 0.0 and pocket["accuracy"] == 1.0
    assert official["match_f1"] == pytest.approx(1.0, abs=1e-6) and pocket["match_f1"] == pytest.approx(0.0)
    assert official["CIDEr"] == pytest.approx(coco_scores([glued, rows[4].prediction], [spaced, rows[4].prediction],
                                                          "official")["CIDEr"])
    assert pocket["CIDEr"] == pytest.approx(coco_scores([glued, rows[4].prediction], [spaced, rows[4].prediction],
                                                        "pocket")["CIDEr"])
    assert pocket["CIDEr"] > official["CIDEr"]  # "vehicle.the" is no token of the reference
    assert aggregate_drivelm(rows, {})["accuracy"] == official["accuracy"]
    assert pocket["protocols"] == protocols("pocket", "off")
    assert pocket["protocols"]["match_f1"]["protocol"] == "pocket (lenient)"
    assert pocket["protocols"]["samples (graph filter)"]["protocol"] == "none"
    notes = " ".join(pocket["notes"])
    assert "not comparable with the challenge's numbers" in notes and "set eval.graph_filter: true" in notes
    with pytest.raises(ValueError, match="official, pocket"):
        aggregate_drivelm(rows, {"protocol": "java"})


def test_official_match_reads_numbers_as_evaluation_py_does():
    answer = "<c1,CAM_BACK,1088.3,497.5>"
    rows = [pred("Moving at 5.5 m/s: <c1,CAM_BACK,1088.3,497.5>", 3, answer),  # the speed pairs with x
            pred("<c1,CAM_BACK,1088,497>", 3, answer)]  # integers are no \d+\.\d+ numbers
    official = [aggregate_drivelm([row], {})["match_f1"] for row in rows]
    pocket = [aggregate_drivelm([row], {"protocol": "pocket"})["match_f1"] for row in rows]
    assert official == [pytest.approx(0.0), pytest.approx(0.0)]
    assert pocket == [pytest.approx(1.0, abs=1e-6), pytest.approx(1.0, abs=1e-6)]


def test_official_match_notes_an_odd_reference():
    out = aggregate_drivelm([pred("<c1,CAM_BACK,1088.3,497.5>", 3, "<c1,CAM_BACK,1088.3,497.5> at 5.5 m/s")], {})
    assert out["match_f1"] == pytest.approx(1.0, abs=1e-6)
    assert any("1 tag-3 references hold an odd count" in n for n in out["notes"])


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


def test_samples_without_a_reference_are_left_out_not_scored_as_wrong():
    """drivelm_test.jsonl (the q_only file) has empty answers: scored, every metric read as a failed model."""
    test = [pred("Going ahead.", 0, "", qa_id="s_f_1", split="test"),
            pred(stitched_tag(1, "CAM_BACK", 1088.3, 497.5), 3, "", qa_id="s_f_2"),
            pred("There is a car.", 2, "", qa_id="s_f_0")]
    out = aggregate_drivelm(test, {"graph_filter": False})
    assert out["accuracy"] is None and out["match_f1"] is None and out["language"] is None
    assert any("3 samples have no reference answer" in n and "score the val split" in n for n in out["notes"])
    out = aggregate_drivelm([*test, pred("Yes.", 0, "Yes.")], {"graph_filter": False})
    assert out["accuracy"] == 1.0 and any("3 samples have no reference" in n for n in out["notes"])


def frame_rows(second_question: str):
    first = "<c1,CAM_BACK,1088.3,497.5>, <c2,CAM_FRONT,800.0,450.0>"
    return [
        # the frame's first QA: the prediction finds c1 but misses c2
        pred(stitched_tag(1, "CAM_BACK", 1088.3, 497.5), 2, first, qa_id="s_f_0", scene="s", frame="f"),
        pred("Yes.", 0, "Yes.", qa_id="s_f_4", scene="s", frame="f",
             question_pixels="Is <c1,CAM_BACK,1088.3,497.5> moving?"),
        pred("Yes.", 0, "No.", qa_id="s_f_5", scene="s", frame="f", question_pixels=second_question),
    ]


def test_graph_filter_drops_questions_about_unmatched_objects():
    rows = frame_rows("Is <c2,CAM_FRONT,800.0,450.0> moving?")
    # on by default: the official scorer applies it
    filtered = aggregate_drivelm(rows, {})
    assert filtered["accuracy"] == 1.0
    assert any("graph filter (official rule) applied: 1 of 3" in n for n in filtered["notes"])
    assert filtered["protocols"]["samples (graph filter)"]["protocol"] == "DriveLM official"
    assert aggregate_drivelm(rows, {"graph_filter": True})["accuracy"] == 1.0
    # switched off, or the pocket protocol's default
    unfiltered = aggregate_drivelm(rows, {"graph_filter": False})
    assert unfiltered["accuracy"] == pytest.approx(0.5)
    assert unfiltered["protocols"]["samples (graph filter)"]["protocol"] == "none"
    assert any("graph filter not applied" in n for n in unfiltered["notes"])
    assert aggregate_drivelm(rows, {"protocol": "pocket"})["accuracy"] == pytest.approx(0.5)
    assert aggregate_drivelm(rows, {"protocol": "pocket", "graph_filter": True})["accuracy"] == 1.0


def test_official_graph_filter_compares_numbers_not_cameras():
    # the question names c1's pixel in another camera: the official filter keeps it, the pocket one does not
    rows = frame_rows("Is <c9,CAM_FRONT,1088.3,497.5> moving?")
    assert aggregate_drivelm(rows, {"graph_filter": True})["accuracy"] == pytest.approx(0.5)
    assert aggregate_drivelm(rows, {"protocol": "pocket", "graph_filter": True})["accuracy"] == 1.0


def test_graph_filter_says_when_a_frame_lacks_its_first_qa():
    rows = frame_rows("Is <c2,CAM_FRONT,800.0,450.0> moving?")[1:]
    out = aggregate_drivelm(rows, {})
    assert any("1 frames lack their first QA" in n for n in out["notes"])
