"""Moving fine-tuning work from OpenAI (or any OpenAI-compatible server) to tunehouse."""
