"""FP8 training pieces (Fishman et al., "Scaling FP8 training to trillion-token LLMs", arXiv 2409.12517).

casts: E4M3/E5M2 constants, saturating casts, fake quantisation with a straight-through gradient,
per-tensor current and delayed scaling. smooth_swiglu: Smooth-SwiGLU (and plain FP8 SwiGLU).
adam: AdamW with FP8 moments (m in E4M3, sqrt(v) in E5M2). On CPU all of it is emulated: values
go through the real torch.float8 dtypes, GEMMs run in fp32.
"""

from rizzrun.fp8.adam import AdamWFP8, adamw_fp8
from rizzrun.fp8.casts import (E4M3, E4M3_MAX, E5M2, E5M2_MAX, DelayedScale, current_scale, fake_quant,
                               fp8_max, grad_fake_quant, saturating_cast, unclamped_e4m3_cast)
from rizzrun.fp8.smooth_swiglu import SmoothSwiGLU, absorb_smoothing, smoothing_scale

__all__ = ["E4M3", "E4M3_MAX", "E5M2", "E5M2_MAX", "fp8_max", "saturating_cast", "unclamped_e4m3_cast", "fake_quant", "grad_fake_quant",
           "current_scale", "DelayedScale", "SmoothSwiGLU", "absorb_smoothing", "smoothing_scale",
           "AdamWFP8", "adamw_fp8"]
