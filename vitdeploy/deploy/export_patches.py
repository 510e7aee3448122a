"""Small patches around known exporter failures of popular models, active only while exporting.

As optimum's model patchers do, each patch replaces one PyTorch function with an equivalent that the
exporters can translate, for the duration of `torch.onnx.export`, and records whether it was used,
so the manifest says which patches shaped the graph. A patch must compute exactly what it replaces
(each has a test comparing both on the inputs that trigger it) and must leave every other call alone.

- `sdpa_nd`: `F.scaled_dot_product_attention` on 5-D (or higher) q, k, v. The dynamo exporter's
  translation takes 4-D inputs only ("only 4D query, key, and value are supported"), and timm's Twins
  (`twins.py` LocallyGroupedAttn) and Hiera (`hiera.py` MaskUnitAttention) call it with
  [B, heads, windows, tokens, dim]. SDPA treats every dimension before the last two as batch, so
  folding them into one is the same computation.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator


def _sdpa_nd(original: Callable, used: Callable[[], None]) -> Callable:
    def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                     **kwargs):
        nd = query.dim()
        if nd > 4 and key.dim() == nd and value.dim() == nd and (attn_mask is None or attn_mask.dim() == nd):
            used()
            lead = query.shape[:-2]

            def fold(t):
                return t.reshape(-1, 1, t.shape[-2], t.shape[-1])

            if attn_mask is not None:
                attn_mask = fold(attn_mask.expand(*lead, query.shape[-2], key.shape[-2]))
            out = original(fold(query), fold(key), fold(value), attn_mask=attn_mask, dropout_p=dropout_p,
                           is_causal=is_causal, scale=scale, **kwargs)
            return out.reshape(*lead, out.shape[-2], out.shape[-1])
        return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                        scale=scale, **kwargs)

    return scaled_dot_product_attention


# name -> (module path, attribute, wrapper factory)
PATCHES: dict[str, tuple[str, str, Callable]] = {
    "sdpa_nd": ("torch.nn.functional", "scaled_dot_product_attention", _sdpa_nd),
}


@contextlib.contextmanager
def patched(names: tuple[str, ...] | None = None) -> Iterator[list[str]]:
    """Install the patches (all, or `names`); yields the list of those that were used, filled while exporting."""
    import importlib

    used: list[str] = []
    installed = []
    try:
        for name, (mod_name, attr, factory) in PATCHES.items():
            if names is not None and name not in names:
                continue
            mod = importlib.import_module(mod_name)
            original = getattr(mod, attr)

            def mark(name=name):
                if name not in used:
                    used.append(name)

            setattr(mod, attr, factory(original, mark))
            installed.append((mod, attr, original))
        yield used
    finally:
        for mod, attr, original in reversed(installed):
            setattr(mod, attr, original)
