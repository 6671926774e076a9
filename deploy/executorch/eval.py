"""`adapt eval --runtime executorch`: an ExecuTorch export scored on PyTorch's prompts (`deploy.export_eval`)."""

from __future__ import annotations

from deploy.export_eval import ExportEvalModel

from . import ExecuTorchError
from .runtime import ExecuTorchVLM


class ExecuTorchEvalModel(ExportEvalModel):
    """The `generate` side of a PocketVLM, run by ExecuTorch on an export folder."""

    runtime_title = "ExecuTorch"
    error = ExecuTorchError

    def __init__(self, folder, processor):
        super().__init__(processor)
        self.runtime = ExecuTorchVLM(folder)
        self.check_processor(folder, self.runtime.processor)

    def close(self) -> None:
        self.runtime.close()

    def answer_row(self, ids, tiles, max_new_tokens, stops):
        return self.runtime.generate(ids, tiles, max_new_tokens, stops)
