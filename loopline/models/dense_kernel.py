"""A dense stack's forward pass compiled with numba, for the batch sizes a line sends.

Why: a model server's request carries 1 to a few dozen rows, and the networks are small
(tens of units), so the arithmetic is a few thousand multiply-adds while numpy spends ~20
calls of 1-3 µs each dispatching it (standardise, one product, bias and ReLU per layer, the
reconstruction error). One compiled call does all of it; the serving benchmark's profile
(`score_primary`) shows the difference. numba (with scipy for its BLAS calls) comes with alibi-detect.

`DenseStack` (numpy) stays the reference: a unit test holds this kernel to it and to torch.
The layers are packed into flat arrays so that one compiled signature serves every network
shape, with no typed containers to build per call.

Compilation takes ~1-2 s on first use in a process; `warm_up` lets a server pay it while it
loads instead of on its first request. numba caches the machine code beside this file (or
in its user cache) when it can write there, so later processes start faster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

Layers = Sequence[tuple[np.ndarray, np.ndarray, bool]]  # (weight [in, out], bias [out], relu)


def _jit(fn: Callable[..., Any]) -> Any:
    options: dict[str, Any] = {"nogil": True, "error_model": "numpy"}
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:  # nowhere writable to cache machine code: compile in each process
        return numba.njit(**options)(fn)


@_jit
def _layers(  # pragma: no cover - compiled; tested through its callers
    h: np.ndarray,
    dims: np.ndarray,
    weights: np.ndarray,
    w_off: np.ndarray,
    biases: np.ndarray,
    b_off: np.ndarray,
    relu: np.ndarray,
) -> np.ndarray:
    n = h.shape[0]
    for layer in range(dims.shape[0] - 1):
        d_in = dims[layer]
        d_out = dims[layer + 1]
        start = w_off[layer]
        # The product through BLAS (numba calls it without Python's dispatch); bias and ReLU
        # in one pass over the result.
        g = np.dot(h, weights[start : start + d_in * d_out].reshape((d_in, d_out)))
        bo = b_off[layer]
        for r in range(n):
            for k in range(d_out):
                v = g[r, k] + biases[bo + k]
                if relu[layer] and v < 0:
                    v = 0
                g[r, k] = v
        h = g
    return h


@_jit
def _standardise(  # pragma: no cover - compiled
    x: np.ndarray, mean: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    n, f = x.shape
    z = np.empty((n, f), dtype=np.float32)
    for r in range(n):
        for j in range(f):
            z[r, j] = (x[r, j] - mean[j]) / scale[j]
    return z


@_jit
def _run(  # pragma: no cover - compiled
    x: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    dims: np.ndarray,
    weights: np.ndarray,
    w_off: np.ndarray,
    biases: np.ndarray,
    b_off: np.ndarray,
    relu: np.ndarray,
    error: bool,
) -> np.ndarray:
    """The network's output [n, out] or, with `error`, the reconstruction error as [n, 1].

    One function with a flag rather than two: the arrays travel as separate arguments
    (a tuple of them made numba's call ~30x slower), and each signature would repeat them."""
    z = _standardise(x, mean, scale)
    out = _layers(z, dims, weights, w_off, biases, b_off, relu)
    if not error:
        return out
    n, f = z.shape
    err = np.empty((n, 1), dtype=np.float32)
    for r in range(n):
        s = np.float32(0.0)
        for j in range(f):
            d = out[r, j] - z[r, j]
            s += d * d
        err[r, 0] = s / np.float32(f)
    return err


@dataclass(frozen=True)
class PackedStack:
    """A standardiser and dense layers as flat arrays, the compiled functions' arguments."""

    mean: np.ndarray  # float32 [F]
    scale: np.ndarray  # float32 [F]
    dims: np.ndarray  # int64 [layers + 1]: widths from input to output
    weights: np.ndarray  # float32: layer i as [in, out] row-major from w_off[i]
    w_off: np.ndarray  # int64 [layers]
    biases: np.ndarray  # float32: layer i's bias from b_off[i]
    b_off: np.ndarray  # int64 [layers]
    relu: np.ndarray  # bool [layers]

    @classmethod
    def of(cls, mean: np.ndarray, scale: np.ndarray, layers: Layers) -> PackedStack:
        if not layers:
            raise ValueError("a dense stack needs at least one layer")
        dims = [int(layers[0][0].shape[0])]
        for i, (weight, bias, _) in enumerate(layers):
            if weight.ndim != 2 or weight.shape[0] != dims[-1] or bias.shape != weight.shape[1:]:
                raise ValueError(
                    f"layer {i}: weight {weight.shape} and bias {bias.shape} do not follow a "
                    f"layer of width {dims[-1]}"
                )
            dims.append(int(weight.shape[1]))
        if mean.shape != (dims[0],) or scale.shape != (dims[0],):
            raise ValueError(f"scaler of shape {mean.shape} for {dims[0]} inputs")
        return cls(
            mean=np.ascontiguousarray(mean, dtype=np.float32),
            scale=np.ascontiguousarray(scale, dtype=np.float32),
            dims=np.array(dims, dtype=np.int64),
            weights=np.concatenate([w.astype(np.float32).reshape(-1) for w, _, _ in layers]),
            w_off=_offsets([w.size for w, _, _ in layers]),
            biases=np.concatenate([b.astype(np.float32).reshape(-1) for _, b, _ in layers]),
            b_off=_offsets([b.size for _, b, _ in layers]),
            relu=np.array([r for _, _, r in layers], dtype=np.bool_),
        )

    def _args(self) -> tuple[np.ndarray, ...]:
        return (
            self.mean,
            self.scale,
            self.dims,
            self.weights,
            self.w_off,
            self.biases,
            self.b_off,
            self.relu,
        )

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The network's output for float32 [n, F] raw (unstandardised) rows."""
        result: np.ndarray = _run(_rows(x), *self._args(), False)
        return result

    def reconstruction_error(self, x: np.ndarray) -> np.ndarray:
        """Mean squared difference between the standardised rows and the output (float32 [n])."""
        if self.dims[-1] != self.dims[0]:
            raise ValueError(f"not an autoencoder: {self.dims[0]} inputs, {self.dims[-1]} outputs")
        result: np.ndarray = _run(_rows(x), *self._args(), True)
        return result[:, 0]

    def warm_up(self) -> None:
        """Compile now (a server calls this while loading, not on its first request)."""
        row = self.mean.reshape(1, -1)
        self.forward(row)
        if self.dims[-1] == self.dims[0]:
            self.reconstruction_error(row)


def _rows(x: np.ndarray) -> np.ndarray:
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        return np.ascontiguousarray(x, dtype=np.float32)
    return x


def _offsets(sizes: list[int]) -> np.ndarray:
    return np.array([0, *np.cumsum(sizes)[:-1].tolist()], dtype=np.int64)
