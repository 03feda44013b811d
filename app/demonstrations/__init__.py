"""Demonstrations: ideal answers written by labelers or uploaded, their review, upload and export."""
