"""Files shipped with the model package: the pocket-tiny tokenizer and the example image (plus their builders)."""
