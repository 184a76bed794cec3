"""Tile arithmetic of encoder-decoder networks: the one source of truth for context and valid sizes.

A network with `levels` resolution levels pools `levels - 1` times by 2, so tile offsets must lie on a grid
of `2 ** (levels - 1)` pixels for tiled output to equal a whole-image pass. With valid convolutions every
3x3 convolution trims one pixel per side; the output is the input minus `context` pixels per axis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Geometry:
    """Per-axis size arithmetic of a U-Net-like network.

    levels: resolution levels (the paper: 5). convs_per_level: 3x3 convolutions per level (the paper: 2).
    padding: "valid" (output smaller than input) or "same" (output as large as input).
    """

    levels: int
    convs_per_level: int = 2
    padding: str = "valid"
    factor: int = 2  # pooling factor along this axis: 2, or 1 for an axis that is never pooled (anisotropic 3D)

    @property
    def step(self) -> int:
        """Tile offsets and same-padding input sizes must be multiples of this (the total pooling factor)."""
        return self.factor ** (self.levels - 1)

    @property
    def _trim(self) -> int:
        return 2 * self.convs_per_level if self.padding == "valid" else 0

    def output_size(self, n: int) -> int | None:
        """Output size for input size `n`, or None when `n` is not a valid input size."""
        t = self._trim
        f = self.factor
        for _ in range(self.levels - 1):
            n -= t
            if n <= 0 or n % f:
                return None
            n //= f
        n -= t
        if n <= 0:
            return None
        for _ in range(self.levels - 1):
            n = f * n - t
        return n if n > 0 else None

    @property
    def context(self) -> int:
        """Input pixels lost per axis (valid) or needed around a tile for exact output (same)."""
        if self.padding == "valid":
            probe = self.input_size(1)
            out = self.output_size(probe)
            assert out is not None
            return probe - out
        return sum(self.margin)

    @property
    def margin(self) -> tuple[int, int]:
        """Pixels of context before and after an output tile (left, right).

        Same padding: a pixel's receptive field reaches up to half the equivalent valid network's context
        plus part of a pooling cell, depending on where it sits in that cell; the margin is the next multiple
        of the pooling step beyond half the valid context (24, 48, 96 pixels for 3, 4, 5 levels), measured to
        make tiles exact and kept on the pooling grid."""
        if self.padding == "same":
            valid = Geometry(self.levels, self.convs_per_level, "valid", self.factor).context
            m = (valid // 2 // self.step + 1) * self.step
            return m, m
        c = self.context
        return c // 2, c - c // 2

    def input_size(self, output: int) -> int:
        """Smallest valid input size whose output covers at least `output` pixels."""
        if output < 1:
            raise ValueError(f"output size must be >= 1, got {output}")
        if self.padding == "same":
            return -(-output // self.step) * self.step
        t, f = self._trim, self.factor
        # Walk up from the smallest bottom size that is large enough.
        bottom = 1
        while True:
            n = bottom
            for _ in range(self.levels - 1):
                n = f * n - t
            if n >= output:
                break
            bottom += 1
        n = bottom + t
        for _ in range(self.levels - 1):
            n = f * n + t
        return n

    def window(self, write_size: int) -> tuple[int, int]:
        """(input size, crop offset into the output) for an output tile of `write_size` pixels.

        The input tile starts `margin[0]` pixels before the output tile; for valid padding the output's first
        pixel is the tile's first pixel, for same padding it sits `margin[0]` pixels into the output.
        """
        lo, _ = self.margin
        if self.padding == "valid":
            return self.input_size(write_size), 0
        return self.input_size(write_size + 2 * lo), lo

    def valid_input_sizes(self, lo: int, hi: int) -> list[int]:
        """All valid input sizes in [lo, hi]."""
        return [n for n in range(lo, hi + 1) if self.output_size(n) is not None]
