"""LoRA SFT engine: resolved TrainingConfig, a training loop with callbacks, checkpoints."""
