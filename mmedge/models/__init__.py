"""Reference models: filled in by the foundation issue."""
