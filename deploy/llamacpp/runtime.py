"""Run a GGUF export (`adapt export --format gguf`) in llama.cpp: `adapt chat --runtime llamacpp` and friends.

The conversation is rendered by llama.cpp from the chat template embedded in the GGUF and tokenised by llama.cpp.
Images are cut into tiles exactly as training cut them (the tiling written into the mmproj), and each tile is
encoded by llama.cpp's vision encoder, so the answer is the PyTorch model's answer (tests/test_gguf.py checks it).
`preprocess="llamacpp"` hands llama.cpp the whole image instead, to see what llama-mtmd-cli does with it (its own
tile grid, resize and padding; README "Edge export" lists the differences).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from deploy.export_sidecar import export_folder
from deploy.gguf import VISION_KEY
from deploy.runtimes import Answer
from model.chat import IMAGE_PLACEHOLDER, ChatTemplate, ChatTemplateError, chat_template_from_dict, normalize_messages
from model.generation import cut_at_repetition
from model.tiling import TilingConfig, TilingError, as_rgb, load_image

from . import MARKER, LlamaCppError, PocketLlama, tiles_of


@dataclass(frozen=True)
class ExportFolder:
    """The two files of a GGUF export and what pocket-adapt wrote into them."""

    model: Path
    mmproj: Path | None
    tiling: TilingConfig | None
    template: ChatTemplate
    file_type: int
    context: int | None = None  # the text model's trained context (<arch>.context_length)
    eos: int | None = None  # tokenizer.ggml.eos_token_id: the tokenizer's EOS, which PyTorch's generate stops on

    def n_ctx(self, wanted: int) -> int:
        """`wanted`, or the trained context where that is shorter: as `adapt chat` on PyTorch, never past it."""
        return min(wanted, self.context) if self.context else wanted

    @classmethod
    def open(cls, folder: str | os.PathLike) -> ExportFolder:
        folder = Path(folder)
        if folder.is_file() and folder.suffix == ".gguf":  # one of the export's files, as llama.cpp's tools take it
            raise LlamaCppError(f"{folder}: a file; give the folder it is in, --model {folder.parent}")
        # no fixed file names to require: the .gguf files are told apart by what they hold, below
        folder = export_folder(folder, "gguf", "GGUF", (), LlamaCppError)
        # which file is the vision part is read from the file (general.type), not its name: `--name mmproj-x`
        # writes mmproj-x-f16.gguf as the text model
        metas = {p: _fields(_reader(p)) for p in sorted(folder.glob("*.gguf"))}
        mmprojs = [p for p, m in metas.items() if m.get("general.type", "mmproj" if p.name.startswith("mmproj-")
                                                           else "model") == "mmproj"]
        models = [p for p in metas if p not in mmprojs]
        if len(models) != 1 or len(mmprojs) > 1:
            found = ", ".join(p.name for p in [*models, *mmprojs]) or "no .gguf files"
            # a model folder (a run's final/) given where its export goes: say how to make the export
            how = (f"; export it first: adapt export -f gguf --model {folder} --out OUT, then --model OUT"
                   if not metas and (folder / "config.json").is_file() else "")
            raise LlamaCppError(f"{folder}: expected one <name>-<type>.gguf and one mmproj-*.gguf, found {found}{how}")
        meta = metas[models[0]]
        if "pocket_adapt.chat_template" not in meta:
            raise LlamaCppError(f"{models[0]}: not written by `adapt export --format gguf` (no pocket_adapt keys)")
        where = f"{models[0]} (pocket_adapt.chat_template)"
        try:
            template = chat_template_from_dict(json.loads(meta["pocket_adapt.chat_template"]), where)
        except json.JSONDecodeError as exc:
            raise LlamaCppError(f"{where}: not JSON ({exc}); export again") from None
        except ChatTemplateError as exc:
            raise LlamaCppError(str(exc)) from None
        tiling = None
        if mmprojs:
            vision = metas[mmprojs[0]]
            tiling = _tiling(mmprojs[0], vision)
            if meta.get(VISION_KEY) and vision.get(VISION_KEY) and meta[VISION_KEY] != vision[VISION_KEY]:
                raise LlamaCppError(f"{mmprojs[0].name} is not the vision part of {models[0].name}: they come from "
                                    f"different models (their vision weights differ); put the mmproj exported with "
                                    f"it beside it, or export again")
        arch = meta.get("general.architecture")
        context = meta.get(f"{arch}.context_length")
        eos = meta.get("tokenizer.ggml.eos_token_id")
        return cls(models[0], mmprojs[0] if mmprojs else None, tiling, template, int(meta.get("general.file_type", 1)),
                   int(context) if isinstance(context, int) and context > 0 else None,
                   int(eos) if isinstance(eos, int) else None)


def _tiling(mmproj: Path, fields: dict) -> TilingConfig:
    """How training cut images, from pocket-adapt's key in the mmproj (another tool's mmproj has none)."""
    where = f"{mmproj} (pocket_adapt.tiling)"
    if "pocket_adapt.tiling" not in fields:
        raise LlamaCppError(f"{mmproj}: not written by `adapt export --format gguf` (no pocket_adapt.tiling, how "
                            "training cut images); put the mmproj exported with the text model beside it")
    try:
        return TilingConfig.from_dict(json.loads(fields["pocket_adapt.tiling"]))
    except json.JSONDecodeError as exc:
        raise LlamaCppError(f"{where}: not JSON ({exc}); export again") from None
    except (TilingError, TypeError, ValueError) as exc:
        raise LlamaCppError(f"{where}: {exc}; export again") from None


def _reader(path: Path):
    from gguf import GGUFReader

    try:
        return GGUFReader(str(path))
    except Exception as err:  # noqa: BLE001 - the reader fails with IndexError / ValueError on a cut file
        raise LlamaCppError(f"{path}: not a readable GGUF file, truncated or damaged? ({type(err).__name__}: {err}); "
                            "export it again") from None


def _fields(reader) -> dict:
    out = {}
    for key, field in reader.fields.items():
        if key.startswith(("pocket_adapt.", "general.")) or key.endswith(".context_length") or \
                key == "tokenizer.ggml.eos_token_id":
            try:
                out[key] = field.contents()
            except Exception:  # noqa: BLE001 - a field this reader cannot decode is not one we need
                pass
    return out


class LlamaCppVLM:
    """An exported model loaded in llama.cpp (one `pocket-llama` process)."""

    def __init__(self, folder: str | os.PathLike, n_ctx: int = 4096):
        """`n_ctx`: the context to start with; a longer prompt or answer reopens llama.cpp with a longer one, up to
        the model's trained context."""
        self.export = ExportFolder.open(folder)
        f32 = self.export.file_type == 0  # general.file_type ALL_F32: keep the KV cache in f32 too
        self.llama = PocketLlama(self.export.model, self.export.mmproj, n_ctx=self.export.n_ctx(n_ctx), kv_f32=f32,
                                 max_ctx=self.export.context)
        try:
            self._probe()
        except BaseException:  # no caller holds us to close: the process and its scratch folder would outlive us
            self.llama.close()
            raise

    def _probe(self) -> None:
        """Stop tokens and whether the embedded template takes our image placeholders, asked of llama.cpp."""
        single = {s: ids[0] for s in self.export.template.stop_strings
                  if len(ids := self.llama.request(op="tokenize", text=s)["ids"]) == 1}
        # the whole stop set, as the processor's `stop_token_ids` (the template's plus EOS): pocket-llama stops on
        # these only, not on the further end tokens llama.cpp guesses from their texts, which PyTorch does not know
        self.stop_ids = sorted(set(single.values()) | ({self.export.eos} if self.export.eos is not None else set()))
        # stop strings that are no single token (a custom template's "###"): the answer's text is cut at them, as
        # the processor's `decode` cuts PyTorch's
        self.text_stops = [s for s in self.export.template.stop_strings if s not in single]
        # the embedded template renders our placeholders as llama.cpp's marker (and gives a bare leading marker,
        # llama-mtmd-cli's, training's <image>\n): send placeholders, so that a typed `<image>Q` stays as typed.
        # An export written before it did takes markers.
        probe = self.llama.request(op="render", messages=[{"role": "user", "content": f"{IMAGE_PLACEHOLDER}Q"}],
                                   add_generation_prompt=False)["prompt"]
        self.placeholders = MARKER in probe

    @property
    def n_ctx(self) -> int:
        """The context llama.cpp holds now."""
        return self.llama.n_ctx

    def close(self) -> None:
        self.llama.close()

    def __enter__(self) -> LlamaCppVLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def messages(self, conversation: list[dict], n_images: int, system: str | None = None) -> list[dict]:
        """Role/content messages with one image placeholder per image, placed as training places them (the
        template renders them as llama.cpp's media marker; media markers themselves for an older export's)."""
        from model.processor import place_images

        messages = place_images(normalize_messages(conversation), n_images, self.export.template)
        if system is not None and not (messages and messages[0]["role"] == "system"):
            messages = [{"role": "system", "content": system}, *messages]
        said = next((k for k, m in enumerate(messages) if MARKER in m["content"]), None)
        if n_images and said is not None:  # llama.cpp would take it for one more image
            raise LlamaCppError(f"message {said} ({messages[said]['role']}) contains {MARKER}, llama.cpp's image "
                                f"marker, which it would read as an image; leave it out of the text (images go in "
                                f"as {IMAGE_PLACEHOLDER} or --image)")
        if self.placeholders:
            return messages
        return [{**m, "content": m["content"].replace(IMAGE_PLACEHOLDER, MARKER)} for m in messages]

    def image_entries(self, images, tiling: TilingConfig | None = None, preprocess: str = "pocket") -> list[dict]:
        if images and self.export.mmproj is None:
            raise LlamaCppError(f"{self.export.model.parent}: no mmproj-*.gguf, so no images")
        if not images:
            return []
        if preprocess == "llamacpp" and tiling is not None and tiling != self.export.tiling:
            # llama.cpp cuts tiles by the mmproj's own keys: another tiling (--max-tiles) would be silently ignored
            raise LlamaCppError("llama.cpp's own preprocessing (--preprocess llamacpp) takes its tile counts from "
                                "the mmproj and cannot be given other ones (--max-tiles); leave --preprocess at pocket")
        tiling = (tiling or self.export.tiling).for_images(len(images))
        entries = []
        for image in images:
            pil = image if not isinstance(image, (str, os.PathLike)) else load_image(image, max_pixels=tiling.max_pixels)
            if preprocess == "pocket":
                entries.append(self.llama.tiles_file(tiles_of(pil, tiling)))
            elif preprocess == "llamacpp":
                path = self.llama.scratch / f"image-{len(entries)}.rgb"
                pil = as_rgb(pil)  # upright, 16-bit stretched: the picture pocket's preprocessing sees
                path.write_bytes(pil.tobytes())
                entries.append({"rgb": str(path), "width": pil.width, "height": pil.height})
            else:
                raise LlamaCppError(f"unknown preprocessing {preprocess!r}; pocket or llamacpp")
        return entries

    def chat(self, conversation: list[dict], images=(), max_new_tokens: int = 64, temperature: float = 0.0,
             system: str | None = None, tiling: TilingConfig | None = None, preprocess: str = "pocket",
             seed: int = 0, cut_repeats: bool = True) -> Answer:
        """Answer the last user turn; greedy at temperature 0. Stops at the template's stop tokens, and (as
        `adapt chat` does, unless ``cut_repeats`` is false) once the answer has begun repeating itself; an answer the
        model's context ended is marked ``context_full``."""
        entries = self.image_entries(list(images), tiling, preprocess)
        answer = self.llama.generate(max_new_tokens, messages=self.messages(conversation, len(entries), system),
                                     images=entries, temperature=temperature, seed=seed, stop_ids=self.stop_ids)
        tokens = list(answer["tokens"])
        if answer["stop"] == "eog":  # the end token is no part of the answer, whether ours or one llama.cpp ends on
            tokens = tokens[:-1]
        cut = cut_at_repetition(tokens, self.detokenize) if cut_repeats else None
        text = answer["text"]
        if cut is not None:
            tokens = tokens[:cut]
            text = self.detokenize(tokens)
        ended = min((k for s in self.text_stops if (k := text.find(s)) >= 0), default=None)
        if ended is not None:  # an answer that ended at a stop string: neither cut by the context nor by length
            text = text[:ended]
            keep = 0  # the tokens whose text lies before the stop string
            while keep < len(tokens) and len(self.detokenize(tokens[: keep + 1])) <= len(text):
                keep += 1
            tokens = tokens[:keep]
        return Answer(text.strip(), tokens, answer["prompt"], cut is not None, answer["timings"],
                      context_full=answer["context_full"] and cut is None and ended is None)

    def detokenize(self, tokens: list[int]) -> str:
        """llama.cpp's text for token ids (special tokens not rendered)."""
        return self.llama.request(op="detokenize", ids=tokens)["text"]
