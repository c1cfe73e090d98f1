"""Sliced AI inference: a transformer decoder the arbiter runs a layer range at a time."""

from airan.ai.model import KVCache, ModelConfig, TransformerDecoder

__all__ = ["KVCache", "ModelConfig", "TransformerDecoder"]
