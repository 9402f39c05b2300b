"""One padded forward for several sequences' next tokens on transformers (the reference engine's batching).

Each sequence keeps its own DynamicCache. For one step they are stacked: every layer's keys and values are
left-padded to the longest sequence of that layer (sliding-window layers hold at most window-1 tokens, so their
lengths differ from the full layers'), and a 4D additive mask per attention type (the dict Gemma 3's model
accepts instead of building masks) hides the padding. Positions are each sequence's own. After the forward the
stacked cache is cut back into one cache per sequence. Padding only adds masked (zero-weight) keys, so every
sequence computes what it computes alone, up to float summation order.
"""

from __future__ import annotations


def _layer_tensors(cache, layer: int):
    entry = cache.layers[layer]
    return entry.keys, entry.values


def _pad_left(t, length: int):
    import torch

    missing = length - t.shape[-2]
    if missing == 0:
        return t
    pad = torch.zeros((*t.shape[:-2], missing, t.shape[-1]), dtype=t.dtype, device=t.device)
    return torch.cat([pad, t], dim=-2)


def _mask(lengths: list[int], width: int, dtype, device):
    """(B, 1, 1, width + 1) additive mask: the last lengths[i] cached keys and the new token are visible."""
    import torch

    mask = torch.full((len(lengths), 1, 1, width + 1), torch.finfo(dtype).min, dtype=dtype, device=device)
    for i, n in enumerate(lengths):
        mask[i, 0, 0, width - n:] = 0
    return mask


def padded_step(net, config, caches: list, tokens: list[int], positions: list[int]):
    """(logits rows as numpy (B, vocab), new per-sequence caches) after feeding tokens[i] to caches[i]."""
    import torch
    from transformers import DynamicCache

    text = getattr(config, "text_config", config)
    types = getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers
    device = caches[0].layers[0].keys.device
    dtype = caches[0].layers[0].keys.dtype
    stacked = DynamicCache(config=text)
    widths: dict[str, int] = {}
    lengths: dict[str, list[int]] = {}
    for layer in range(len(types)):
        pairs = [_layer_tensors(c, layer) for c in caches]
        width = max(k.shape[-2] for k, _ in pairs)
        widths[types[layer]] = width
        lengths[types[layer]] = [k.shape[-2] for k, _ in pairs]
        keys = torch.cat([_pad_left(k, width) for k, _ in pairs])
        values = torch.cat([_pad_left(v, width) for _, v in pairs])
        stacked.layers[layer].update(keys, values)
    masks = {kind: _mask(lengths[kind], widths[kind], dtype, device) for kind in widths}
    with torch.inference_mode():
        out = net(input_ids=torch.tensor([[t] for t in tokens], device=device),
                  position_ids=torch.tensor([[p] for p in positions], device=device),
                  cache_position=torch.tensor([max(widths.values())], device=device),
                  past_key_values=stacked, attention_mask=masks, use_cache=True, logits_to_keep=1)
    logits = out.logits[:, -1].float().cpu().numpy()
    return logits, _split(stacked, caches, types, lengths, positions, text)


def _split(stacked, caches: list, types: list[str], lengths: dict, positions: list[int], text) -> list:
    """The stacked cache cut back into one DynamicCache per sequence (its own length + the new token)."""
    from transformers import DynamicCache

    out = []
    for i in range(len(caches)):
        cache = DynamicCache(config=text)
        for layer, kind in enumerate(types):
            entry = stacked.layers[layer]
            keep = lengths[kind][i] + 1
            if getattr(entry, "is_sliding", False):
                keep = min(keep, entry.sliding_window - 1)
            target = cache.layers[layer]
            target.update(entry.keys[i:i + 1, :, -keep:].clone(), entry.values[i:i + 1, :, -keep:].clone())
            if hasattr(target, "cumulative_length"):
                target.cumulative_length = positions[i] + 1  # tokens seen, not tokens kept
        out.append(cache)
    return out

