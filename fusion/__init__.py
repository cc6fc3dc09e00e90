"""Streaming focus-stack fusion (UMS-Fusion) and offline refusion of saved stacks."""
from fusion.engine import FusionResult, FusionSettings, StreamingFusion

__all__ = ["FusionResult", "FusionSettings", "StreamingFusion"]
