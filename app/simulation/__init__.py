"""`ranklab simulate`: the training loop driven by a scripted labeling team over HTTP (docs/loop.md)."""
