"""Package data: recipe YAMLs, chat templates and DeepSpeed configs (no code); installed as `pocket_adapt_templates`."""
