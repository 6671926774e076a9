"""pocket-adapt: deploy."""
