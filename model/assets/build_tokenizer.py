"""Build the ``pocket-tiny`` byte-level BPE tokenizer (``model/assets/pocket-tiny/``).

    python -m model.assets.build_tokenizer [--out DIR]

The tokenizer is trained with the ``tokenizers`` library on a small English corpus generated
here (shapes, colours, counting, positions, yes/no, multiple-choice letters, land-cover classes,
grounding prompts and ``[[x1, y1, x2, y2]]`` boxes, some medical and driving words).  The corpus
is generated from fixed word lists with a seeded ``random.Random``, so every run writes
byte-identical ``tokenizer.json`` and ``tokenizer_config.json`` (for a given ``tokenizers``
version: its JSON layout is what gets written).

Layout: the 13 special tokens take ids 0-12 (``<|endoftext|>`` = 0 is pad and unk, so padding
with id 0 is padding with the pad token), then the 256 byte symbols, then the learned merges, for
``VOCAB_SIZE`` = 2048 ids in all.  Pre-tokenisation is GPT-2 style byte-level (digit runs stay
together, so box coordinates tokenise compactly); no normaliser, so any text round-trips.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

__all__ = [
    "SPECIAL_TOKENS",
    "VOCAB_SIZE",
    "MODEL_MAX_LENGTH",
    "DEFAULT_OUT",
    "corpus",
    "build_tokenizer",
    "tokenizer_config",
    "write_tokenizer",
    "main",
]

# Order matters: ids 0..12, stable.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",  # 0: pad / unk
    "<|im_start|>",  # 1
    "<|im_end|>",  # 2: eos
    "<img>",  # 3
    "</img>",  # 4
    "<IMG_CONTEXT>",  # 5
    "<quad>",  # 6
    "</quad>",  # 7
    "<ref>",  # 8
    "</ref>",  # 9
    "<box>",  # 10
    "</box>",  # 11
    "<video>",  # 12
)
VOCAB_SIZE = 2048
MODEL_MAX_LENGTH = 4096
SEED = 20240607
N_SENTENCES = 12000
DEFAULT_OUT = Path(__file__).resolve().parent / "pocket-tiny"
EXTRA_SPECIAL_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}

# ---------------------------------------------------------------------------- corpus
SHAPES = ["circle", "square", "triangle", "rectangle", "star", "hexagon", "ellipse", "oval", "diamond",
          "pentagon", "line", "arrow", "cross", "ring", "dot", "polygon", "cube", "sphere"]
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white",
           "grey", "gray", "cyan", "magenta", "dark", "light", "bright", "pale"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                "eighteen", "nineteen", "twenty"]
POSITIONS = ["left", "right", "top", "bottom", "centre", "center", "middle", "top-left", "top-right",
             "bottom-left", "bottom-right", "upper", "lower", "above", "below", "next to", "behind",
             "in front of", "corner", "edge", "side"]
LETTERS = list("ABCDEFGH")
LAND_COVER = ["forest", "river", "farmland", "residential", "desert", "beach", "industrial", "harbor",
              "airport", "meadow", "lake", "mountain", "parking lot", "bridge", "stadium", "church",
              "railway station", "commercial", "dense residential", "sparse residential", "pond",
              "port", "playground", "school", "park", "viaduct", "storage tanks", "baseball field",
              "tennis court", "runway", "ship", "airplane", "road", "grassland", "bare land", "wetland"]
MEDICAL = ["chest", "x-ray", "CT", "MRI", "ultrasound", "scan", "lung", "heart", "brain", "liver",
           "kidney", "bone", "fracture", "lesion", "tumor", "nodule", "pneumonia", "opacity",
           "effusion", "normal", "abnormal", "patient", "diagnosis", "finding", "organ", "tissue",
           "benign", "malignant", "left lung", "right lung", "abdomen", "pathology", "slide"]
DRIVING = ["car", "truck", "bus", "pedestrian", "cyclist", "motorcycle", "traffic light", "stop sign",
           "lane", "vehicle", "ego vehicle", "intersection", "crosswalk", "road", "brake", "turn left",
           "turn right", "go straight", "slow down", "accelerate", "keep lane", "change lane",
           "front camera", "back camera", "speed", "parked", "moving", "barrier", "traffic cone"]
OBJECTS = SHAPES + ["cat", "dog", "person", "tree", "house", "building", "boat", "bird", "ball", "box",
                    "table", "chair", "cup", "book", "window", "door", "sign", "field", "cloud", "sky"]
QUESTIONS = [
    "What is in the image?", "Describe the image.", "Describe the image in detail.",
    "What colour is the {s}?", "What color is the {s}?", "Where is the {c} {s}?",
    "How many {s}s are there?", "Is there a {c} {s}?", "Is the {s} on the {p}?",
    "Which shape is {c}?", "What shape is at the {p}?", "Count the {s}s.",
    "What is the land-cover class of this scene?", "Classify the scene.",
    "Which option is correct?", "Answer with the option's letter from the given choices directly.",
    "Answer the question using a single word or phrase.",
    "Please provide the bounding box coordinate of the region this sentence describes: <ref>the {c} {s}</ref>",
    "Please detect and label all objects in the following image and mark their positions.",
    "What should the ego vehicle do next?", "Is the {m} normal or abnormal?",
    "What does this {m} show?", "What is the diagnosis?", "Is there a {d} in front of the ego vehicle?",
]
CONNECTORS = ["and", "or", "but", "with", "of", "the", "a", "an", "is", "are", "there", "in", "on", "at",
              "to", "from", "this", "that", "it", "image", "picture", "photo", "scene", "region",
              "object", "objects", "shown", "visible", "located", "near", "far", "large", "small",
              "big", "tiny", "answer", "question", "option", "options", "yes", "no", "Yes", "No"]
SYSTEM_LINES = [
    "You are Pocket, a small vision-language assistant.",
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
]


def _box(rng: random.Random) -> str:
    x1, y1 = rng.randint(0, 900), rng.randint(0, 900)
    x2, y2 = rng.randint(x1 + 1, 1000), rng.randint(y1 + 1, 1000)
    return f"[[{x1}, {y1}, {x2}, {y2}]]"


def _sentence(rng: random.Random) -> str:
    s, c, p = rng.choice(SHAPES), rng.choice(COLOURS), rng.choice(POSITIONS)
    n = rng.randint(0, 20)
    o = rng.choice(OBJECTS)
    kind = rng.randrange(16)
    if kind == 0:
        return f"There is a {c} {s} at the {p} of the image."
    if kind == 1:
        return f"There are {n} {s}s. There are {NUMBER_WORDS[n]} {s}s. The answer is {n}."
    if kind == 2:
        return f"The {s} is {c}. The {c} {s} is on the {p}, {rng.choice(POSITIONS)} of the {o}."
    if kind == 3:
        q = rng.choice(QUESTIONS).format(s=s, c=c, p=p, m=rng.choice(MEDICAL), d=rng.choice(DRIVING))
        return f"<image>\n{q}"
    if kind == 4:
        opts = rng.sample(SHAPES + COLOURS + LAND_COVER, len(LETTERS))
        k = rng.randint(2, len(LETTERS))
        lines = "\n".join(f"{LETTERS[i]}. {opts[i]}" for i in range(k))
        ans = LETTERS[rng.randrange(k)]
        return f"Question: which one is shown?\nOptions:\n{lines}\nAnswer: {ans}. ({ans}) {ans}"
    if kind == 5:
        lc = rng.choice(LAND_COVER)
        return f"This remote sensing image shows {lc}. The scene is classified as {lc}. Answer: {lc}"
    if kind == 6:
        return f"<ref>the {c} {o}</ref><box>{_box(rng)}</box>"
    if kind == 7:
        boxes = ", ".join(_box(rng)[1:-1] for _ in range(rng.randint(1, 3)))
        return f"The {c} {s} is located at [{boxes}]."
    if kind == 8:
        return rng.choice(["Yes.", "No.", "yes", "no", "Yes, it is.", "No, it is not.", "Yes, there is.",
                           "No, there is not."])
    if kind == 9:
        m1, m2 = rng.choice(MEDICAL), rng.choice(MEDICAL)
        return f"The {m1} {rng.choice(['shows', 'reveals', 'has', 'suggests'])} a {m2}. The finding is {rng.choice(['normal', 'abnormal'])}."
    if kind == 10:
        d1, d2 = rng.choice(DRIVING), rng.choice(DRIVING)
        return f"The {d1} is {p} of the ego vehicle, so it should {rng.choice(['brake', 'slow down', 'keep lane', 'turn left', 'turn right', 'go straight'])}. There is a {d2} ahead."
    if kind == 11:
        return " ".join(str(rng.randint(0, 1000)) for _ in range(rng.randint(3, 8))) + f" {n}, {rng.randint(0, 20)}."
    if kind == 12:
        return f"Image-{rng.randint(1, 8)}: <image>\nFrame-{rng.randint(1, 16)}: <image>\nFrame{rng.randint(1, 16)}: <image>"
    if kind == 13:
        return rng.choice(SYSTEM_LINES)
    if kind == 14:
        words = rng.choices(CONNECTORS + COLOURS + SHAPES + NUMBER_WORDS, k=rng.randint(5, 12))
        return " ".join(words).capitalize() + rng.choice([".", "?", "!", ",", ";", ":"])
    return f"({n}) {{{c}}} \"{s}\" '{o}' - {p}/{rng.choice(LAND_COVER)}; {n * 5}% of {rng.randint(100, 999)}."


def corpus(n_sentences: int = N_SENTENCES, seed: int = SEED) -> Iterator[str]:
    """The deterministic training corpus: fixed vocabulary lines, then generated sentences."""
    for group in (SHAPES, COLOURS, NUMBER_WORDS, POSITIONS, LAND_COVER, MEDICAL, DRIVING, OBJECTS, CONNECTORS):
        for word in group:
            yield f"{word} {word.capitalize()} {word}s the {word}."
    for i in range(0, 1001):
        yield f"{i}, [{i}], [[{i}, {i}]] {i}."
    rng = random.Random(seed)
    for _ in range(n_sentences):
        yield _sentence(rng)


# ---------------------------------------------------------------------------- build
_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def _without_specials(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        for piece in _SPECIAL_RE.split(line):
            if piece:
                yield piece


def build_tokenizer(vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Train the pocket-tiny tokenizer (deterministic)."""
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
                for t in SPECIAL_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Train on the text between special tokens (encoding splits them off first anyway).
    tokenizer.train_from_iterator(_without_specials(corpus()), trainer=trainer)
    for i, tok in enumerate(SPECIAL_TOKENS):
        if tokenizer.token_to_id(tok) != i:
            raise RuntimeError(f"special token {tok!r} got id {tokenizer.token_to_id(tok)}, expected {i}")
    return tokenizer


def _chat_template_jinja() -> str:
    """The Jinja chat template of ``templates/chat/pocket-tiny.yaml``: the shared `model.chat.chat_template_jinja`,
    so the shipped tokenizer refuses a misordered conversation as every export's template does."""
    from model.chat import chat_template_jinja, get_chat_template

    return chat_template_jinja(get_chat_template("pocket-tiny"))


def tokenizer_config() -> dict:
    """The ``tokenizer_config.json`` contents (transformers, fast tokenizer)."""
    added = {
        str(i): {"content": tok, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        for i, tok in enumerate(SPECIAL_TOKENS)
    }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": MODEL_MAX_LENGTH,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "extra_special_tokens": dict(EXTRA_SPECIAL_TOKENS),
        "added_tokens_decoder": added,
        "chat_template": _chat_template_jinja(),
    }


def write_tokenizer(out: str | Path = DEFAULT_OUT) -> Path:
    """Build and write ``tokenizer.json`` and ``tokenizer_config.json`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    # Re-dump through json with fixed settings so the bytes depend only on the content.
    tok_json = json.dumps(json.loads(tokenizer.to_str()), ensure_ascii=False, indent=1) + "\n"
    cfg_json = json.dumps(tokenizer_config(), ensure_ascii=False, indent=2) + "\n"
    (out / "tokenizer.json").write_text(tok_json, encoding="utf-8", newline="\n")
    (out / "tokenizer_config.json").write_text(cfg_json, encoding="utf-8", newline="\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.assets.build_tokenizer", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    out = write_tokenizer(args.out)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    print(f"wrote {out}/tokenizer.json and tokenizer_config.json (vocab {tok.get_vocab_size()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
