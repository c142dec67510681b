"""One module per ``instkit`` verb; each exposes ``command``."""
