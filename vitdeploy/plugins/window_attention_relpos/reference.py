"""PyTorch reference of `WindowAttentionRelPos`: `window_attention` with SAM's decomposed relative position as
the bias (the code, shared with WindowAttention, is in `vitdeploy.plugins.window_attention.reference`)."""
from vitdeploy.plugins.window_attention.reference import decomposed_rel_pos, window_attention_relpos

__all__ = ["decomposed_rel_pos", "window_attention_relpos"]
