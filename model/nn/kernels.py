"""The matrix products of the prepared weights, and the rule that keeps a row's numbers its own.

**The rule: a row's numbers do not depend on its batch mates.** Every product of a weight runs one
kernel, with the weight laid out for it once, whatever the number of rows; the kernel is chosen when
the weights are prepared and *checked* then, on the running machine: rows computed alone, among a
few and among many must give the same bits (``_batch_invariant``). A plain ``x @ W`` does not pass:
MKL's 1-row product is a matrix-vector kernel that sums in another order than its several-row GEMM,
and for some shapes the GEMM changes again with the row count (1024-deep products at 17 and 129 rows
on this machine), so a row's logits changed in their last bits with its batch mates before.

- fp32 on a CPU: MKL's packed GEMM (``cblas_sgemm_compute`` on a weight packed once), for every row
  count. It passes the check for Kronos-small's shapes at every row count from 1 to 4096 and is as
  fast as the plain product or faster at every count (benchmarks/README.md); on shapes where it does
  not pass (small ones, e.g. 32-wide), oneDNN's prepacked product (``mkldnn._linear_pointwise``),
  which passed at every shape measured.
- bf16 on a CPU: oneDNN's prepacked bf16 product (AMX / AVX512-BF16), on at most ``TILE`` rows a
  call: oneDNN's kernels give a row the same bits at every row count up to 32 and change blocking
  above (measured), and a 32-row AMX product costs about what a 1-row one does.
- int8 on a CPU: decode steps (a few rows) run ``torch._weight_int8pack_mm`` (int8 weights, one scale
  per output channel, bf16 activations; it passes the check at every row count); prefills and window
  recomputations (hundreds of rows, where that kernel is 10-20x slower than AMX) run the same
  quantized weights dequantized to bf16, as bf16 does. Which of the two a call runs depends on the
  call (``bulk``), never on its row count.
- other devices: ``torch.addmm`` (GPU kernels are not checked here).

A weight whose every candidate fails the check still runs (the last candidate) and is listed in
``NOT_INVARIANT``; the tests assert that list stays empty for the shapes they use.
"""

from __future__ import annotations

import torch
from torch import Tensor

TILE = 32  # rows per bf16 call
_PACK_HINT = 8  # the row count the packed layouts are prepared for (any count runs on them)
_PROBE_ROWS = (1, 2, 3, 5, 8, 16, 17, 33, 64, 129, 300)
_PROBE_CACHE: dict[tuple, bool] = {}
NOT_INVARIANT: list[tuple] = []


class Product:
    """``x (R, K) @ W (K, N) + bias (+ residual)`` for one weight, on the kernel the rule picks."""

    def __init__(self, weight: Tensor, bias: Tensor | None, precision: str = "fp32"):
        """``weight``: (K, N) float32, input-major; ``bias``: (N,) or None."""
        k, n = weight.shape
        self.shape = (k, n)
        self.device = weight.device
        self.dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        self.bias = None if bias is None else bias.detach().to(self.dtype).contiguous()
        self.bulk_product: Product | None = None
        weight = weight.detach().float()
        if self.device.type != "cpu":
            self.kind, self.w = "addmm", weight.to(self.dtype).contiguous()
            return
        if precision == "int8":
            self.kind = "int8"
            scale = weight.abs().amax(0).clamp_min(1e-12) / 127  # per output channel
            self.w = (weight / scale).round().clamp(-127, 127).t().to(torch.int8).contiguous()  # (N, K)
            self.scale = scale.to(self.dtype)
            dequantized = self.w.t().float() * scale
            self.bulk_product = Product(dequantized, bias, "bf16")
            return
        for kind in ("mkl", "onednn") if precision == "fp32" else ("onednn-tiles",):
            self._prepare(kind, weight)
            if _batch_invariant(kind, k, n, self.bias is not None, self.dtype):
                return
        NOT_INVARIANT.append((self.kind, k, n, precision))

    def _prepare(self, kind: str, weight: Tensor) -> None:
        self.kind = kind
        wt = weight.t().contiguous().to(self.dtype)  # (N, K), as nn.Linear keeps it
        if kind == "mkl" and _has_mkl():
            self.w = torch.ops.mkl._mkl_reorder_linear_weight(wt, _PACK_HINT)
            # The kernel reads only the shape and dtype of the original weight: a stride-0 stand-in.
            self.shape_of = torch.zeros((), dtype=self.dtype).expand(wt.shape)
        elif kind in ("mkl", "onednn", "onednn-tiles"):
            self.kind = "onednn" if kind == "mkl" else kind
            self.w = torch.ops.mkldnn._reorder_linear_weight(wt, TILE if kind == "onednn-tiles" else _PACK_HINT)

    def __call__(self, x: Tensor, residual: Tensor | None = None, *, bulk: bool = False) -> Tensor:
        if bulk and self.bulk_product is not None:
            return self.bulk_product(x, residual)
        out = self._product(x if x.dtype == self.dtype else x.to(self.dtype))
        return out if residual is None else out.add_(residual)

    def _product(self, x: Tensor) -> Tensor:
        kind = self.kind
        if kind == "mkl":
            return torch.ops.mkl._mkl_linear(x, self.w, self.shape_of, self.bias, x.shape[0])
        if kind == "onednn":
            return torch.ops.mkldnn._linear_pointwise(x, self.w, self.bias, "none", [], "")
        if kind == "onednn-tiles":
            return self._tiled(x)
        if kind == "int8":
            out = torch._weight_int8pack_mm(x.contiguous(), self.w, self.scale)
            return out if self.bias is None else out.add_(self.bias)
        return x @ self.w if self.bias is None else torch.addmm(self.bias, x, self.w)

    def _tiled(self, x: Tensor) -> Tensor:
        rows = x.shape[0]
        if rows <= TILE:
            return torch.ops.mkldnn._linear_pointwise(x, self.w, self.bias, "none", [], "")
        return torch.cat(
            [
                torch.ops.mkldnn._linear_pointwise(x[i : i + TILE], self.w, self.bias, "none", [], "")
                for i in range(0, rows, TILE)
            ]
        )


def _has_mkl() -> bool:
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


def _batch_invariant(kind: str, k: int, n: int, bias: bool, dtype: torch.dtype) -> bool:
    """Whether ``kind`` gives every row the same bits alone and among 2..300 rows, for a (k, n) weight
    (random values, the same dtype and bias or not), with this process's thread count."""
    key = (kind, k, n, bias, dtype, torch.get_num_threads())
    if key not in _PROBE_CACHE:
        g = torch.Generator().manual_seed(k * 7919 + n)
        product = Product.__new__(Product)
        product.shape, product.device, product.dtype, product.bulk_product = (k, n), torch.device("cpu"), dtype, None
        product.bias = torch.randn(n, generator=g).to(dtype) if bias else None
        product._prepare(kind, torch.randn(k, n, generator=g) / k**0.5)
        x = torch.randn(max(_PROBE_ROWS), k, generator=g).to(dtype)
        checked = sorted({i for r in _PROBE_ROWS for i in (0, r // 2, r - 1)})
        alone = {i: product(x[i : i + 1]) for i in checked}
        _PROBE_CACHE[key] = all(
            torch.equal(out[i : i + 1], alone[i])
            for r in _PROBE_ROWS
            for out in (product(x[:r]),)
            for i in (0, r // 2, r - 1)
        )
    return _PROBE_CACHE[key]
