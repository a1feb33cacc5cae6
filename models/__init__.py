"""The contract between training and serving: bundle layout, text formatting, ONNX Runtime scoring."""
