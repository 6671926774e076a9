"""ONNX export and ONNX Runtime: `graphs` (the three graphs, reusable one by one), `export` (the `adapt export
--format onnx` writer), `runtime` (the folder loaded and checked, the generation loop, `adapt chat --runtime onnx`),
`eval` (`adapt eval --runtime onnx`)."""
