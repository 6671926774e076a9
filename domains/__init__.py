"""pocket-adapt: domains."""
