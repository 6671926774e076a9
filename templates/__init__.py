"""Package data: recipe YAMLs, chat templates and DeepSpeed configs (no code)."""
