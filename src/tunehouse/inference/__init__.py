"""Inference: generation engines and the service that picks them, shared by the API routes and the CLI.

- service.InferenceService(settings).engine(base_model, adapter_dir) -> the loaded engine (llama.cpp or HF);
  .admit() -> a Ticket or QueueFull.
- generate.generate(engine, prompt_ids, adapter_dir, SamplingParams, stop_ids) -> Pieces of text; concurrent
  calls (threads) decode in shared batches (batching.py: slots, prefix reuse, the scheduler; hf_batch.py);
  generate.run_concurrently runs a request's n choices together.
- sampling: SamplingParams and the Sampler every engine shares (request bodies -> SamplingParams are the
  API's: tunehouse.api.completion_requests).
- gguf_convert: PEFT LoRA -> GGUF LoRA; local Gemma 3 -> GGUF. export.export_model: peft | merged | gguf.
"""
