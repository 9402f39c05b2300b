"""tunehouse: self-hosted, OpenAI-compatible LLM fine-tuning (LoRA) on your own hardware."""

__version__ = "0.1.0"
