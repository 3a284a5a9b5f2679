"""How the fused engine runs: speed options that never change a result beyond float rounding.

Defaults are what measured fastest (BENCHMARKS.md); each field says why. Pass them to
:func:`core.engine.grid.run_grid` (``engine=EngineOptions(autotune=True)`` or a dict of the same
fields) or to :class:`core.engine.fused.FusedStitches` (as keyword arguments).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["EngineOptions"]


@dataclass(frozen=True)
class EngineOptions:
    # bf16 autocast; None: on CUDA only (bf16 convolutions on the 2-core CPU ran 1.4-1.7x slower).
    amp: bool | None = None
    # NHWC activations and weights: oneDNN fuses a residual add only in channels_last, and cuDNN's
    # fast kernels want it (1.2x the speed of NCHW for the zoo's grids on 2 CPU cores too).
    channels_last: bool | None = None
    # BatchNorm of the frozen networks folded into the convolution before it: one op fewer per
    # layer, exact up to float rounding (core.engine.folding).
    fold_bn: bool = True
    # conv + bias (+ residual) + ReLU of the frozen networks as one cuDNN / oneDNN call.
    fuse_relu: bool = True
    # torch.compile the receiver suffixes: off, compile time exceeds a grid's run time.
    compile: bool = False
    # cuDNN's timed search for each convolution shape: off, on an H100 it cost 12-18 s per grid
    # and its picks ran no faster than the heuristics'.
    autotune: bool = False
    # k x k stride-k stitches as one matrix product rather than a convolution (CUDA).
    patch_product: bool = True

    @classmethod
    def coerce(cls, options: EngineOptions | dict | None) -> EngineOptions:
        """Options from an EngineOptions, a dict of its fields (unknown ones refused) or None."""
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown engine options {sorted(unknown)}; known: {sorted(known)}")
        return cls(**options)

    def as_dict(self) -> dict:
        return asdict(self)
