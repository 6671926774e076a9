"""Images + a conversation → model inputs (input_ids, attention_mask, pixel_values, labels).

Each `<image>` placeholder in the text becomes `<img>` + `<IMG_CONTEXT>` × (tokens per tile × tiles)
+ `</img>` (MobileVLM: the context tokens alone). The prompt is tokenised in one call, as the model's
training code does (InternVL: the whole prompt; LLaVA / MobileVLM: each stretch between images), with one
`<IMG_CONTEXT>` per image widened afterwards rather than thousands tokenised; labels follow the trained
text by character offsets. A sequence that does not fit is refused, never cut inside its image tokens.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .chat import (
    IMAGE_PLACEHOLDER,
    ChatTemplate,
    ConversationError,
    chat_template_jinja,
    get_chat_template,
    image_first,
    image_prefix,
    normalize_messages,
)
from .errors import ModelConfigError, PocketAdaptError
from .tiling import TilingConfig, TilingError, count_tiles, load_image, preprocess_image

IGNORE_INDEX = -100
ImageInput = Image.Image | str | os.PathLike  # an opened image or the path of its file
GROUNDING_MARKUP = ("<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>")


class SampleTooLongError(PocketAdaptError, ValueError):
    """The sample's tokens (image tokens included) exceed the maximum sequence length."""


@dataclass
class Encoded:
    """One encoded sample. `num_tiles[i]` tiles of `pixel_values` belong to image i."""

    input_ids: torch.LongTensor
    attention_mask: torch.LongTensor
    pixel_values: torch.Tensor | None
    labels: torch.LongTensor | None = None
    num_tiles: list[int] = field(default_factory=list)

    def to_model_inputs(self) -> dict[str, torch.Tensor]:
        """Batch of one, ready for `PocketVLM.forward` / `generate`."""
        inputs = {"input_ids": self.input_ids[None], "attention_mask": self.attention_mask[None]}
        if self.pixel_values is not None:
            inputs["pixel_values"] = self.pixel_values
        if self.labels is not None:
            inputs["labels"] = self.labels[None]
        return inputs


class VLMProcessor:
    """Tokeniser + tiling + chat template of one model, all read from its config."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        tiling: TilingConfig,
        chat_template: ChatTemplate,
        image_seq_length: int,
        image_context_token: str = "<IMG_CONTEXT>",
        image_start_token: str | None = "<img>",
        image_end_token: str | None = "</img>",
    ):
        if isinstance(image_seq_length, bool) or not isinstance(image_seq_length, int) or image_seq_length < 1:
            raise ModelConfigError(f"image_seq_length (image tokens per tile) must be a positive whole number, got "
                                   f"{image_seq_length!r}")
        if not isinstance(image_context_token, str) or not image_context_token:
            raise ModelConfigError(f"image_context_token (the token each image feature replaces) must be a non-empty "
                                   f"string such as '<IMG_CONTEXT>', got {image_context_token!r}")
        self.tokenizer = tokenizer
        self.tiling = tiling
        self.chat_template = chat_template
        self.image_seq_length = image_seq_length
        self.image_context_token = image_context_token
        self.image_start_token = image_start_token
        self.image_end_token = image_end_token
        missing = [t for t in (image_context_token, image_start_token, image_end_token) if t and t not in tokenizer.get_vocab()]
        if missing:
            # released InternVL tokenizers hold these already; others (MobileVLM's) get them added.
            # The model never looks image-context ids up in its embeddings, so no resize is needed.
            tokenizer.add_tokens(missing, special_tokens=True)
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_context_token)
        self._start_ids = [tokenizer.convert_tokens_to_ids(image_start_token)] if image_start_token else []
        self._end_ids = [tokenizer.convert_tokens_to_ids(image_end_token)] if image_end_token else []
        self._special: tuple | None = None  # see _special_ids
        self._control: tuple | None = None  # see _control_pattern

    @classmethod
    def from_config(cls, config, tokenizer: PreTrainedTokenizerBase) -> VLMProcessor:
        """Build from a `PocketVLMConfig` and its tokenizer; a `ModelConfigError` when the tokenizer's image context
        token is not the config's ``image_token_id`` (the model would look for its image tokens under another id)."""
        processor = cls(
            tokenizer=tokenizer,
            tiling=config.tiling_config,
            chat_template=get_chat_template(config.chat_template),
            image_seq_length=config.image_seq_length,
            image_context_token=config.image_context_token,
            image_start_token=config.image_start_token,
            image_end_token=config.image_end_token,
        )
        if processor.image_token_id != config.image_token_id:
            raise ModelConfigError(
                f"the model config's image_token_id is {config.image_token_id}, but its tokenizer "
                f"({type(tokenizer).__name__}, {len(tokenizer)} tokens) reads the image context token "
                f"{config.image_context_token!r} as id {processor.image_token_id}: prompts would carry their image "
                "tokens under an id the model does not replace with image features; use the tokenizer the model "
                f"was saved with, or set image_token_id to {processor.image_token_id}")
        return processor

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, config) -> VLMProcessor:
        return cls.from_config(config, AutoTokenizer.from_pretrained(str(path), trust_remote_code=False))

    def save_pretrained(self, path: str | os.PathLike, image_token: str = IMAGE_PLACEHOLDER,
                        video_token: str | None = None) -> None:
        """The tokenizer files, with this model's chat template as `chat_template.jinja` (`chat_template_jinja`: image
        and video items render `image_token` / `video_token`), not whatever template the tokenizer was read with, so
        transformers' `apply_chat_template` on the folder renders the prompts this processor does."""
        saved = self.tokenizer.chat_template
        self.tokenizer.chat_template = chat_template_jinja(self.chat_template, image_token, video_token, bos=True)
        try:
            self.tokenizer.save_pretrained(str(path))
        finally:
            self.tokenizer.chat_template = saved
        _name_fast_tokenizer_class(Path(path) / "tokenizer_config.json")
        # transformers 5 writes tokenizer.json only; slow readers (MobileVLM's use_fast=False, InternLM2's remote
        # code) need the sentencepiece model the tokenizer was read from
        model_file = getattr(self.tokenizer, "vocab_file", None)
        if isinstance(model_file, str) and model_file.endswith(".model") and Path(model_file).is_file():
            target = Path(path) / Path(model_file).name
            if not (target.exists() and target.samefile(model_file)):
                shutil.copyfile(model_file, target)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids that end generation: the template's stop strings that are single tokens, plus EOS."""
        return list(self._special_ids()[0])

    @property
    def text_stop_strings(self) -> list[str]:
        """The template's stop strings that are no single token of the tokenizer (a custom template's ``###``):
        `stop_token_ids` cannot hold them, so `decode` cuts the answer at them as text (and generation can stop on
        them with transformers' ``stop_strings``)."""
        return list(self._special_ids()[2])

    def stop_kwargs(self) -> dict[str, Any]:
        """`generate` keyword arguments that end an answer where the template says: its stop ids as
        ``eos_token_id``, and its `text_stop_strings` (with the tokenizer transformers needs to find them) if any."""
        out: dict[str, Any] = {"eos_token_id": self.stop_token_ids}
        if self.text_stop_strings:
            out.update(stop_strings=self.text_stop_strings, tokenizer=self.tokenizer)
        return out

    def _special_ids(self) -> tuple[tuple[int, ...], frozenset[int], tuple[str, ...]]:
        """(stop ids, ids `decode` drops, text stop strings), worked out once per chat template and vocabulary:
        reading the tokenizer's vocabulary costs milliseconds, and `decode` runs once per generated answer."""
        key = (self.chat_template, len(self.tokenizer), self.tokenizer.eos_token_id)
        if self._special is None or self._special[0] != key:
            vocab = self.tokenizer.get_vocab()
            end = self.chat_template.eos_string
            if end and end not in vocab:  # a template meant for another tokenizer
                warnings.warn(
                    f"chat template {self.chat_template.name!r} ends each answer with {end!r}, which is not one token "
                    f"of this tokenizer ({type(self.tokenizer).__name__}, {len(self.tokenizer)} tokens): answers are "
                    "trained to end in it as plain text, and generation must find it in the decoded text rather than "
                    "stop on a token; use the template the model was trained with (adapt inspect names it)",
                    stacklevel=3)
            stops = {vocab[s] for s in self.chat_template.stop_strings if s in vocab}
            if self.tokenizer.eos_token_id is not None:
                stops.add(self.tokenizer.eos_token_id)
            keep = {vocab[t] for t in GROUNDING_MARKUP if t in vocab}
            text_stops = tuple(s for s in self.chat_template.stop_strings if s not in vocab)
            self._special = (key, tuple(sorted(stops)), frozenset(self.tokenizer.all_special_ids) - keep, text_stops)
        return self._special[1], self._special[2], self._special[3]

    def _control_pattern(self) -> re.Pattern | None:
        """The tokenizer's added tokens other than grounding markup (``<|im_end|>``, ``<IMG_CONTEXT>``, ``<img>``,
        ...) as one pattern: the tokenizer reads each as its control token wherever it meets it in text."""
        key = (len(self.tokenizer), id(self.tokenizer))
        if self._control is None or self._control[0] != key:
            added = self.tokenizer.get_added_vocab()
            names = sorted((t for t in added if t not in GROUNDING_MARKUP and t != IMAGE_PLACEHOLDER), key=len, reverse=True)
            self._control = (key, re.compile("|".join(map(re.escape, names))) if names else None)
        return self._control[1]

    def control_tokens(self, text: str) -> list[str]:
        """Every control token of the tokenizer that `text` holds as plain text, in order (grounding markup and the
        ``<image>`` placeholder are none): what `check_text` refuses in a turn."""
        pattern = self._control_pattern()
        return pattern.findall(text) if pattern is not None else []

    def check_text(self, messages: list[dict], system_message: str | None = None) -> None:
        """Refuse, with a `ConversationError` naming it, text the model would not read as text: a control token
        of the tokenizer in any turn or in `system_message` (a forged ``<|im_end|><|im_start|>user`` turn, a stray
        ``<IMG_CONTEXT>`` that would break the image features' count), or an ``<image>`` placeholder in an answer
        or a system message."""
        pattern = self._control_pattern()
        texts = [(m["role"], m["content"]) for m in messages]
        if isinstance(system_message, str):  # anything else is refused by the template
            texts.append(("system", system_message))
        for role, content in texts:
            if role != "user" and IMAGE_PLACEHOLDER in content:
                where = "an answer" if role == "assistant" else "the system message"
                raise ConversationError(f"an <image> placeholder in {where}; images go in user turns")
            found = pattern.search(content) if pattern is not None else None
            if found:
                raise ConversationError(
                    f"the {role} text holds {found.group(0)!r}, a control token of the model's tokenizer, "
                    "which would be read as that token and not as text; remove or reword it")

    def image_tokens(self, num_tiles: int) -> list[int]:
        """The id run one image with `num_tiles` tiles becomes."""
        return self._start_ids + [self.image_token_id] * (num_tiles * self.image_seq_length) + self._end_ids

    def prepare_images(
        self, images: ImageInput | Sequence[ImageInput], tiling: TilingConfig | None = None
    ) -> tuple[torch.Tensor | None, list[int]]:
        """Tiles of all images, concatenated, and the tile count of each (multi-image cap applied).

        Paths are read with `load_image` under the tiling's `max_pixels` cap (`ImageLoadError` above it); an image
        given opened is turned by its EXIF orientation as `load_image` turns its file. One image may be given alone,
        not in a list."""
        if isinstance(images, (str, os.PathLike, Image.Image)):  # a path is no sequence of one-letter paths
            images = [images]
        elif hasattr(images, "shape"):  # an array: one image, not one per row (refused below)
            images = [images]
        elif images is not None and not isinstance(images, Sequence):  # a generator of paths
            images = list(images)
        for k, image in enumerate(images or ()):
            if not isinstance(image, (str, os.PathLike, Image.Image)):
                hint = " (PIL.Image.fromarray makes one of an RGB uint8 array)" if hasattr(image, "shape") else ""
                raise TypeError(f"image {k}: expected an opened PIL image or the path of an image file, got "
                                f"{type(image).__module__}.{type(image).__name__}{hint}")
        if not images:
            return None, []
        tiling = self._call_tiling(tiling).for_images(len(images))
        tensors = [preprocess_image(_as_image(img, tiling.max_pixels), tiling) for img in images]
        pixels = tensors[0] if len(tensors) == 1 else torch.cat(tensors)  # one image: no copy
        return pixels, [t.shape[0] for t in tensors]

    def __call__(
        self,
        conversation: list[dict],
        images: ImageInput | Sequence[ImageInput] = (),
        add_generation_prompt: bool = True,
        with_labels: bool = False,
        max_length: int | None = None,
        tiling: TilingConfig | None = None,
        system_message: str | None = None,
    ) -> Encoded:
        """Encode one conversation (InternVL `from/value` turns or `role/content` messages).

        With `with_labels`, only assistant answers (and their end separators) are supervised.
        Raises `SampleTooLongError` when the result would exceed `max_length`.
        """
        pixel_values, num_tiles = self.prepare_images(images, tiling)
        return self.encode_tokens(
            conversation, num_tiles, add_generation_prompt, with_labels, max_length, system_message, pixel_values
        )

    def tiles_for_sizes(self, sizes: Sequence[tuple[int, int]] | tuple[int, int],
                        tiling: TilingConfig | None = None) -> list[int]:
        """Tile counts of images of these (width, height) sizes (the images of one sample: they share the tile cap),
        without reading pixels. One size may be given alone, not in a list."""
        if isinstance(sizes, Sequence) and len(sizes) == 2 and all(_is_whole(v) for v in sizes):
            sizes = [sizes]  # one (width, height), not two sizes
        sizes = list(sizes)
        for k, size in enumerate(sizes):
            try:
                width, height = size
            except (TypeError, ValueError):
                width = height = None
            if not (_is_whole(width) and _is_whole(height) and width >= 1 and height >= 1):
                raise ValueError(f"size {k}: expected a (width, height) pair of whole numbers >= 1, got {size!r}")
        if not sizes:
            return []
        tiling = self._call_tiling(tiling).for_images(len(sizes))
        return [count_tiles(w, h, tiling) for w, h in sizes]

    def _call_tiling(self, tiling: TilingConfig | None) -> TilingConfig:
        """`tiling` (the model's own when None) for one call, refused when its tiles are of another size: the model's
        vision tower and its `image_seq_length` tokens per tile are for its own tile size."""
        if tiling is None:
            return self.tiling
        if tiling.tile_size != self.tiling.tile_size:
            raise TilingError(f"tiling.tile_size {tiling.tile_size} differs from the model's tile size "
                              f"{self.tiling.tile_size} (the image size its vision tower takes, "
                              f"{self.image_seq_length} image tokens per tile); change the tile counts only")
        return tiling

    def encode_tokens(
        self,
        conversation: list[dict],
        num_tiles: Sequence[int] = (),
        add_generation_prompt: bool = True,
        with_labels: bool = False,
        max_length: int | None = None,
        system_message: str | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> Encoded:
        """The token side of `__call__`, given each image's tile count (pixels optional).

        Cheap enough to measure every sample of a data set before training (see `tiles_for_sizes`).
        """
        messages = normalize_messages(conversation)
        self.check_text(messages, system_message)
        messages = place_images(messages, len(num_tiles), self.chat_template)
        if with_labels and self.chat_template.strip_messages:  # as the model's training code did
            messages = [{**m, "content": m["content"].strip()} for m in messages]
        segments = self.chat_template.segments(
            messages, add_generation_prompt=add_generation_prompt, system_message=system_message
        )
        ids: list[int] = []
        labels: list[int] = []
        if self.chat_template.add_bos and self.tokenizer.bos_token_id is not None:
            ids.append(self.tokenizer.bos_token_id)
            labels.append(IGNORE_INDEX)
        self._tokenize(segments, list(num_tiles), ids, labels)
        if max_length is not None and len(ids) > max_length:
            raise SampleTooLongError(
                f"sample needs {len(ids)} tokens ({sum(num_tiles) * self.image_seq_length} of them image "
                f"tokens for {sum(num_tiles)} tiles) but max_length is {max_length}"
            )
        if with_labels:
            # image tokens are inputs, never targets (they sit in user turns, but be explicit)
            labels = [IGNORE_INDEX if i == self.image_token_id else lab for i, lab in zip(ids, labels)]
        input_ids = torch.tensor(ids, dtype=torch.long)
        return Encoded(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pixel_values=pixel_values,
            labels=torch.tensor(labels, dtype=torch.long) if with_labels else None,
            num_tiles=list(num_tiles),
        )

    def _tokenize(self, segments: list[tuple[str, bool]], num_tiles: list[int], ids: list[int],
                  labels: list[int]) -> None:
        """Append the ids of the rendered prompt and their labels (the id where trained, else `IGNORE_INDEX`),
        tokenised as the model's own training code does, so that sentencepiece-style tokenizers (a word-start
        ``▁`` at the start of every call) give the official ids.

        InternVL (``mpt`` templates) tokenises the whole prompt with each ``<image>`` written out as ``<img>``
        ``<IMG_CONTEXT>`` ``</img>``, then widens the ``<IMG_CONTEXT>`` to the image's run (text between added
        tokens is tokenised apart, so this gives the ids of the written-out run). LLaVA / MobileVLM (``two``,
        ``tokenizer_image_token``) tokenises each stretch between ``<image>`` placeholders by itself. A token is
        trained when it holds a character of a trained segment (``▁two`` of ``ASSISTANT: two`` is)."""
        found = sum(t.count(IMAGE_PLACEHOLDER) for t, _ in segments)
        if found != len(num_tiles):
            raise ConversationError(f"the prompt has {found} <image> placeholders but {len(num_tiles)} images")
        if not self.tokenizer.is_fast:  # no character offsets: piece by piece (ids may differ from the official)
            return self._tokenize_pieces(segments, iter(num_tiles), ids, labels)
        marker = None
        if self.chat_template.sep_style != "two":
            marker = "".join(t for t in (self.image_start_token, self.image_context_token, self.image_end_token) if t)
            segments = [(t.replace(IMAGE_PLACEHOLDER, marker), trained) for t, trained in segments]
        spans, at = [], 0  # character spans of the trained segments
        for t, trained in segments:
            if trained:
                spans.append((at, at + len(t)))
            at += len(t)
        text = "".join(t for t, _ in segments)
        stretches = [text] if marker is not None else text.split(IMAGE_PLACEHOLDER)
        tiles, base = iter(num_tiles), 0
        for k, stretch in enumerate(stretches):
            if k:
                image = self.image_tokens(next(tiles))
                ids.extend(image)
                labels.extend([IGNORE_INDEX] * len(image))
                base += len(IMAGE_PLACEHOLDER)
            for piece, trained in self._tokenize_text(stretch, spans, base):
                if marker is not None and piece == self.image_token_id:
                    n = next(tiles) * self.image_seq_length
                    ids.extend([piece] * n)
                    labels.extend([IGNORE_INDEX] * n)
                else:
                    ids.append(piece)
                    labels.append(piece if trained else IGNORE_INDEX)
            base += len(stretch)
        if next(tiles, None) is not None:
            raise ConversationError(
                f"the tokenizer {self.tokenizer.name_or_path!r} does not read {self.image_context_token!r} as one token")

    def _tokenize_text(self, text: str, spans: list[tuple[int, int]], base: int) -> list[tuple[int, bool]]:
        """(id, trained) of `text`, which starts at character `base` of a prompt whose trained characters are
        `spans` (sorted, disjoint)."""
        if not text:
            return []
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        out, s = [], 0
        for piece, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
            start, end = base + start, base + max(start, end)
            while s < len(spans) and spans[s][1] <= start:
                s += 1
            out.append((piece, s < len(spans) and spans[s][0] < max(end, start + 1)))
        return out

    def _tokenize_pieces(self, segments: list[tuple[str, bool]], image_iter, ids: list[int],
                         labels: list[int]) -> None:
        for text, trained in segments:
            for k, part in enumerate(text.split(IMAGE_PLACEHOLDER)):
                if k:
                    image = self.image_tokens(next(image_iter))
                    ids.extend(image)
                    labels.extend([IGNORE_INDEX] * len(image))
                piece = self.tokenizer.encode(part, add_special_tokens=False) if part else []
                ids.extend(piece)
                labels.extend(piece if trained else [IGNORE_INDEX] * len(piece))

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True,
               cut_text_stops: bool = True) -> str:
        """Text up to the first stop token, and (`cut_text_stops`) up to the first `text_stop_strings`. Special
        tokens are dropped, except InternVL's grounding markup (`<ref>`, `<box>`, `<quad>` and their closings),
        which is part of an answer."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        stops, drop, text_stops = self._special_ids()
        ids = ids[: next((k for k, i in enumerate(ids) if i in stops), len(ids))]
        if skip_special_tokens:
            ids = [i for i in ids if i not in drop]
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        if cut_text_stops:
            text = text[:min((k for k in map(text.find, text_stops) if k >= 0), default=len(text))]
        return text.strip()

    def show_prompt(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The prompt as `adapt chat --show-prompt` prints it: every run of image-context tokens summarised as
        ``<IMG_CONTEXT>×N``, the rest verbatim (special tokens kept)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        token = self.image_context_token
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        return re.sub(f"(?:{re.escape(token)})+", lambda m: f"{token}×{len(m.group(0)) // len(token)}", text)

    def pad(self, samples: Sequence[Encoded], padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Pad a batch with the tokenizer's pad id; the mask comes from lengths (never from id 0).

        `padding_side` is ``"right"`` (training) or ``"left"`` (batched generation); the samples either all carry
        labels or none does (a ValueError otherwise: the labels rows would not line up with the samples)."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if not samples:
            raise ValueError("pad() got no samples")
        labelled = [s.labels is not None for s in samples]
        if any(labelled) and not all(labelled):
            raise ValueError(f"sample {labelled.index(False)} has no labels but sample {labelled.index(True)} has: "
                             "a batch is either all training samples (with_labels=True) or all prompts")
        longest = max(len(s.input_ids) for s in samples)
        batch_ids, batch_mask, batch_labels = [], [], []
        for s in samples:
            gap = longest - len(s.input_ids)
            ids_pad = torch.full((gap,), self.pad_token_id, dtype=torch.long)
            zeros = torch.zeros(gap, dtype=torch.long)
            ignore = torch.full((gap,), IGNORE_INDEX, dtype=torch.long)
            join = (lambda a, b: torch.cat([b, a])) if padding_side == "left" else (lambda a, b: torch.cat([a, b]))
            batch_ids.append(join(s.input_ids, ids_pad))
            batch_mask.append(join(s.attention_mask, zeros))
            if s.labels is not None:
                batch_labels.append(join(s.labels, ignore))
        batch = {"input_ids": torch.stack(batch_ids), "attention_mask": torch.stack(batch_mask)}
        pixels = [s.pixel_values for s in samples if s.pixel_values is not None]
        if pixels:
            batch["pixel_values"] = torch.cat(pixels)
        if batch_labels:
            batch["labels"] = torch.stack(batch_labels)
        return batch


def place_images(messages: list[dict], n_images: int, template: ChatTemplate) -> list[dict]:
    """`messages` with their `<image>` placeholders checked and added (`add_image_placeholders`), each user turn's
    one placeholder moved first where `template` says so (LLaVA / MobileVLM): the prompt every runtime renders."""
    messages = add_image_placeholders(messages, n_images)
    if template.image_first:
        messages = [{**m, "content": image_first(m["content"])} if m["role"] == "user" else m for m in messages]
    return messages


def add_image_placeholders(messages: list[dict], n_images: int) -> list[dict]:
    """Check `<image>` placeholders against the image count; add them where `image_prefix` says."""
    prefix = image_prefix(sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages), n_images)
    if not prefix:
        return messages
    first_user = next((k for k, m in enumerate(messages) if m["role"] == "user"), None)
    if first_user is None:
        raise ConversationError("images were given but the conversation has no user turn")
    messages = [dict(m) for m in messages]
    messages[first_user]["content"] = prefix + messages[first_user]["content"]
    return messages


def _is_whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _as_image(image: ImageInput, max_pixels: int) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    return load_image(Path(image), max_pixels=max_pixels)


def _name_fast_tokenizer_class(config_file: Path) -> None:
    """transformers 5 records a generic fast tokenizer as ``TokenizersBackend``, a class transformers 4 (InternVL's
    and MobileVLM's own scripts) does not have; ``PreTrainedTokenizerFast`` is the same class in 5 and known to 4."""
    if not config_file.is_file():
        return
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

