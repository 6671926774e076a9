"""`adapt eval --runtime onnx`: an ONNX export scored on PyTorch's prompts (`deploy.export_eval`)."""

from __future__ import annotations

from deploy.export_eval import ExportEvalModel

from .runtime import OnnxRuntimeError, OnnxVLM


class OnnxEvalModel(ExportEvalModel):
    """The `generate` side of a PocketVLM, run by onnxruntime on an export folder."""

    runtime_title = "ONNX Runtime"
    error = OnnxRuntimeError

    def __init__(self, folder, processor, threads: int | None = None):
        super().__init__(processor)
        self.runtime = OnnxVLM(folder, threads)
        self.check_processor(folder, self.runtime.processor)

    def close(self) -> None:
        self.runtime.close()

    def prepare_tiles(self, pixel_values):
        return pixel_values.float().cpu().numpy()

    def answer_row(self, ids, tiles, max_new_tokens, stops):
        return self.runtime.generate(ids, tiles, max_new_tokens, stops)
