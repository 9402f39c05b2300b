"""Migrating fine-tuning jobs from OpenAI (or any OpenAI-compatible server) to tunehouse.

`source` reads jobs and their files from the source server, `jobs` plans and starts the same training on the
target, `parity` compares the new local model with the old one, `distill` turns the old model's answers into
training chats (`prompts` reads the prompt files). Plain functions over two `openai.OpenAI`
clients: the target is reached over HTTP like any other client would.
"""
