"""Shipped model assets: the pocket-tiny tokenizer (model/assets/pocket-tiny/) and example.png."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
from PIL import Image

from model.assets.build_tokenizer import SPECIAL_TOKENS, VOCAB_SIZE, write_tokenizer
from model.assets.example_image import HEIGHT, SHAPES, WIDTH, draw_example_image, write_example_image
from model.chat import get_chat_template
from model.resources import assets_dir
from tests.deps import require

TOK_DIR = assets_dir() / "pocket-tiny"
EXPECTED_IDS = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}


@pytest.fixture(scope="module")
def tok():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TOK_DIR), local_files_only=True)


def test_shipped_files_small():
    for name in ("tokenizer.json", "tokenizer_config.json"):
        path = TOK_DIR / name
        assert path.is_file(), f"{path} missing: run python -m model.assets.build_tokenizer"
        assert path.stat().st_size < 500_000


def test_special_token_order_is_stable():
    assert SPECIAL_TOKENS == (
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>",
        "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>", "<video>",
    )
    data = json.loads((TOK_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    added = {t["content"]: t["id"] for t in data["added_tokens"]}
    assert added == EXPECTED_IDS
    assert all(t["special"] and not t["normalized"] for t in data["added_tokens"])


def test_loads_with_autotokenizer(tok):
    assert tok.is_fast
    assert len(tok) == VOCAB_SIZE == 2048
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 0
    assert tok.unk_token_id == 0
    assert tok.bos_token is None
    assert tok.model_max_length == 4096
    assert tok.padding_side == "right"
    # Nothing is added around the text (no BOS/EOS), like Qwen2.
    assert tok("hi")["input_ids"] == tok.encode("hi", add_special_tokens=False)


def test_extra_special_tokens_for_internvl_processor(tok):
    """transformers' InternVLProcessor reads these attributes from the tokenizer."""
    assert tok.start_image_token == "<img>" and tok.start_image_token_id == 3
    assert tok.end_image_token == "</img>" and tok.end_image_token_id == 4
    assert tok.context_image_token == "<IMG_CONTEXT>" and tok.context_image_token_id == 5
    assert tok.video_token == "<video>" and tok.video_token_id == 12


@pytest.mark.parametrize("token", SPECIAL_TOKENS)
def test_special_tokens_single_ids_round_trip(tok, token):
    ids = tok.encode(token, add_special_tokens=False)
    assert ids == [EXPECTED_IDS[token]]
    assert tok.convert_tokens_to_ids(token) == EXPECTED_IDS[token]
    assert tok.convert_ids_to_tokens(ids) == [token]
    assert tok.decode(ids) == token
    # Also inside text, without surrounding spaces being swallowed.
    text = f"a {token} b{token}c"
    enc = tok.encode(text, add_special_tokens=False)
    assert enc.count(EXPECTED_IDS[token]) == 2
    assert tok.decode(enc) == text


def test_img_context_repeats(tok):
    ids = tok.encode("<IMG_CONTEXT>" * 5, add_special_tokens=False)
    assert ids == [5] * 5
    ids = tok.encode("<img>" + "<IMG_CONTEXT>" * 256 + "</img>\nWhat is it?", add_special_tokens=False)
    assert ids[:258] == [3] + [5] * 256 + [4]
    assert ids.count(5) == 256


def _random_texts(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0x00, 0x1F), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
              (0x900, 0x97F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF),
              (0x300, 0x36F), (0xE000, 0xF8FF), (0x10000, 0x10FFFF)]
    texts = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(0, 40)):
            lo, hi = rng.choice(ranges)
            cp = rng.randint(lo, hi)
            if 0xD800 <= cp <= 0xDFFF:  # lone surrogates are not encodable text
                cp = 0x41
            chars.append(chr(cp))
        texts.append("".join(chars))
    return texts


FIXED_TEXTS = [
    "",
    " ",
    "  leading and trailing spaces  ",
    "Hello, world! Don't stop: 1,234.5 ; (x) [y] {z}",
    "tabs\tand\nnewlines\r\n\n\n and  double  spaces",
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型",
    "e\u0301 vs \u00e9 (not NFC-normalised) \ufb01 \u2126",
    "emoji 🎉👩‍👩‍👧 flags 🇬🇧 zwj\u200d bom\ufeff nul\x00 del\x7f",
    "<ref>the red circle</ref><box>[[50, 83, 297, 375]]</box>",
    "<image>\nFrame-1: <image>\n<|im_start|> not <|im_start|x>",
    " ,  .  ?  ! '  \" ",  # would be changed by clean_up_tokenization_spaces
]


@pytest.mark.parametrize("text", FIXED_TEXTS + _random_texts())
def test_byte_level_round_trip(tok, text):
    ids = tok.encode(text, add_special_tokens=False)
    assert all(0 <= i < VOCAB_SIZE for i in ids)
    assert tok.decode(ids) == text


def test_boxes_are_compact(tok):
    for text in ("[[12, 345, 678, 1000]]", "[[123, 456, 789, 999]]", "[[0, 0, 1000, 1000]]"):
        assert len(tok.encode(text, add_special_tokens=False)) <= 16, text
    assert len(tok.encode("There is a red circle at the top-left of the image.", add_special_tokens=False)) <= 14


def test_chat_template_matches_pocket_tiny(tok):
    require("jinja2")
    template = get_chat_template("pocket-tiny")
    convs = [
        [{"role": "user", "content": "<image>\nWhat is it?"}],
        [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
    ]
    for msgs in convs:
        for gen in (True, False):
            hf = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            assert hf == template.render(msgs, add_generation_prompt=gen)


def test_chat_template_refuses_misordered_conversation(tok):
    """The shipped template is the shared `chat_template_jinja`: a conversation `render` refuses for its order is
    refused, not prompted silently wrong (the tokenizer once had its own copy without that check)."""
    require("jinja2")
    bad = [
        [{"role": "user", "content": "Q1"}, {"role": "user", "content": "Q2"}],
        [{"role": "assistant", "content": "A"}, {"role": "user", "content": "Q"}],
        [{"role": "user", "content": "Q"}, {"role": "system", "content": "S"}],
    ]
    for msgs in bad:
        with pytest.raises(Exception, match="alternate user/assistant"):
            tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("name", ["pocket-tiny", "internvl2_5"])
def test_segments_tokenize_independently(tok, name):
    """Tokenising the segments one by one gives the ids of the whole text, so label masks line up."""
    msgs = [
        {"role": "user", "content": "<image>\nHow many shapes are there?"},
        {"role": "assistant", "content": "There are 3 shapes."},
        {"role": "user", "content": "Where is the red circle?"},
        {"role": "assistant", "content": "<ref>red circle</ref><box>[[78, 83, 297, 375]]</box>"},
    ]
    segs = get_chat_template(name).segments(msgs)
    whole = tok.encode("".join(t for t, _ in segs), add_special_tokens=False)
    pieces = [tok.encode(t, add_special_tokens=False) for t, _ in segs]
    assert [i for p in pieces for i in p] == whole
    trained = [i for (_, flag), p in zip(segs, pieces) if flag for i in p]
    assert trained.count(2) == 2  # each answer ends with <|im_end|>


def test_rebuild_is_byte_identical(tmp_path):
    write_tokenizer(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (TOK_DIR / name).read_bytes(), (
            f"{name} differs from a fresh build: rerun python -m model.assets.build_tokenizer"
        )


# ---------------------------------------------------------------------------- example image
def test_example_image_shipped():
    path = assets_dir() / "example.png"
    assert path.is_file()
    assert path.stat().st_size < 60_000
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (WIDTH, HEIGHT) == (640, 480)
        assert img.mode == "RGB"
        shipped = np.asarray(img)
    assert np.array_equal(shipped, np.asarray(draw_example_image()))


def test_example_image_deterministic(tmp_path):
    a, b = draw_example_image(), draw_example_image()
    assert a.tobytes() == b.tobytes()
    out = write_example_image(tmp_path / "x.png")
    with Image.open(out) as img:
        assert np.array_equal(np.asarray(img), np.asarray(a))


def test_example_image_content():
    px = np.asarray(draw_example_image()).astype(int)

    def centre(name):
        _, (x1, y1, x2, y2) = SHAPES[name]
        return px[(y1 + y2) // 2 + (10 if "triangle" in name else 0), (x1 + x2) // 2]

    red, green, blue = centre("red circle"), centre("green triangle"), centre("blue square")
    assert red[0] > 180 and red[1] < 80 and red[2] < 80
    assert green[1] > 140 and green[0] < 80 and green[2] < 120
    assert blue[2] > 180 and blue[0] < 80
    # Placement: circle top-left, triangle centre, square bottom-right.
    assert SHAPES["red circle"][1][2] < WIDTH / 3 and SHAPES["red circle"][1][3] < HEIGHT / 2
    tx1, ty1, tx2, ty2 = SHAPES["green triangle"][1]
    assert abs((tx1 + tx2) / 2 - WIDTH / 2) < 20 and abs((ty1 + ty2) / 2 - HEIGHT / 2) < 20
    assert SHAPES["blue square"][1][0] > WIDTH * 2 / 3 and SHAPES["blue square"][1][1] > HEIGHT / 2
    assert tuple(px[5, 5]) == tuple(px[HEIGHT - 5, WIDTH // 2]) == (245, 245, 240)
