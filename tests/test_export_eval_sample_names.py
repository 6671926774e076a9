"""`adapt eval --runtime X`: a runtime's error on one sample (llama.cpp's "image tokens and tiles disagree", an
export's NaN logits) did not say which sample it was, since `answer_row` gets only token ids; `predict` now hands
the export model each row's ``source:line`` and the error names it, for every runtime in one place."""

from __future__ import annotations

import pytest

from adapt.evaluate import predict
from deploy.export_eval import ExportEvalModel
from model.errors import PocketAdaptError
from tests.test_evaluate import Rec, tiny, turns  # noqa: F401  (tiny: the fixture)


class _FailsOnColour(ExportEvalModel):
    """Answers every prompt with one stop token, except a prompt asking about a colour."""

    runtime_title = "Fake Runtime"

    def answer_row(self, ids, tiles, max_new_tokens, stops):
        if "colour" in self.processor.tokenizer.decode(ids):
            raise PocketAdaptError("image tokens and tiles disagree")
        return [], {}


def test_a_runtimes_error_names_the_sample(tiny):  # noqa: F811
    _, processor = tiny
    recs = [Rec("drive.jsonl", 4, turns("Name a shape.", "square")),
            Rec("drive.jsonl", 7, turns("Name a colour.", "red")),
            Rec("drive.jsonl", 9, turns("Name a number.", "2"))]
    with pytest.raises(PocketAdaptError,
                       match=r"^Fake Runtime, sample drive\.jsonl:7: image tokens and tiles disagree$"):
        predict(_FailsOnColour(processor), processor, recs, max_new_tokens=2, batch_size=3, progress=False)


def test_without_names_the_row_is_named(tiny):  # noqa: F811
    _, processor = tiny
    batch = processor.pad([processor(turns("Hello"), [], add_generation_prompt=True),
                           processor(turns("Name a colour."), [], add_generation_prompt=True)], padding_side="left")
    with pytest.raises(PocketAdaptError, match=r"^Fake Runtime, row 2 of the batch: image tokens"):
        _FailsOnColour(processor).generate(**batch)
