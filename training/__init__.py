"""Training half: preference data -> Bradley–Terry reward model -> evaluated, exported ONNX bundle."""
