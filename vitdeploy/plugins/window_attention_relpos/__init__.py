"""SAM's windowed attention with decomposed relative position: WindowAttention's sibling node type (same kernel)."""
from vitdeploy.plugins.window_attention_relpos.spec import SPEC

__all__ = ["SPEC"]
