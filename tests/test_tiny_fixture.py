"""The tiny model fixture loads in plain transformers and its tokenizer round-trips Gemma turn tokens."""

from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_model_loads_and_runs(tiny_model_dir):
    import torch

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tok("<start_of_turn>user\nhi<end_of_turn>\n", return_tensors="pt").input_ids
    assert tok.convert_tokens_to_ids("<end_of_turn>") in ids[0].tolist()
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
