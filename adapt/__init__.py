"""pocket-adapt: adapt."""
