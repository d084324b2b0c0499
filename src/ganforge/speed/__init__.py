"""The speed layer: objects that do nothing when switched off, so the eager path runs the same code.

- :mod:`.presets`: the `speed` setting (presets and `+feature` switches), fused optimizers, bf16.
- :mod:`.cpu`: threads, the allocator, per-layer channels_last, faster dropout masks.
- :mod:`.dftconv`: small stride-1 convolutions through the discrete Fourier transform.
- :mod:`.thinconv`: convolutions from or to a single channel through a product and unfold/fold.
- :mod:`.upconv`: nearest upsampling and the convolution after it as one transposed convolution.
- :mod:`.guard`: the non-finite step guard (host or sync-free) and the skipped-step ledger.
- :mod:`.capture`: whole-step compile and CUDA-graph capture, with a fallback to eager.
"""

from ganforge.device import resolve_device
from ganforge.speed.capture import CompiledStep, GraphedStep, notice
from ganforge.speed.cpu import (FastDropout, ThreadGovernor, channels_last, cores, fast_dropout, keep_freed_memory,
                                set_threads, to_format)
from ganforge.speed.dftconv import dft_conv, dft_used
from ganforge.speed.guard import Faults, StepGuard, all_finite, buffers_finite
from ganforge.speed.presets import (AUTO, FAST, SPEED_FEATURES, SPEEDS, Speed, adopt_implementation, autocast,
                                    optimizer_options, parse_speed, resolve_speed, set_backends)
from ganforge.speed.thinconv import thin_conv, thin_used
from ganforge.speed.upconv import upsample_conv, upsample_folded

__all__ = ["AUTO", "FAST", "SPEEDS", "SPEED_FEATURES", "CompiledStep", "FastDropout", "Faults", "GraphedStep",
           "Speed", "StepGuard", "ThreadGovernor", "adopt_implementation", "all_finite", "autocast", "buffers_finite",
           "channels_last", "cores", "dft_conv", "dft_used", "fast_dropout", "keep_freed_memory", "notice", "optimizer_options",
           "parse_speed", "resolve_device", "resolve_speed", "set_backends", "set_threads", "thin_conv", "thin_used",
           "to_format", "upsample_conv", "upsample_folded"]
