"""Evaluation: pure metrics, the base-vs-fine-tuned runner, reports, and the quickstart's fixed parts."""
