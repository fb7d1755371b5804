"""CLIP's contrastive loss as fused Triton kernels: the logits live only in registers.

The same loss and the same notation as loss.TiledContrastiveLoss: queries Q [N, D] (images),
keys K [M, D] (texts), scale s, logits S = s Q K^T, row i's positive at column o + i.

  row term     L_row = 1/N sum_i (lse_i - S[i, o+i]),     lse_i  = log sum_{j<M} exp S[i, j]
  column term  L_col = 1/N sum_j (lse'_j - S[j, j]),      lse'_j = log sum_{i<N} exp S[i, j],  j < N
  loss         L = 1/2 (L_row + L_col)   (symmetric, needs o = 0)   or   L = L_row   (one way)

The tiled op computes S a band of rows at a time with torch.mm, so on a GPU each band is written
to global memory and read back for the exp and the sums. Here, as in FlashAttention-2 and Inf-CL,
each Triton program owns a block of rows of S and streams blocks of columns past it:

  forward   for every block of keys, the tile <q_r, k_c> is a matrix product over D taken in
            chunks (so any D fits on chip), folded at once into a running log-sum-exp
              m' = max(m, max_c S[r, c]),   l' = l exp(m - m') + sum_c exp(S[r, c] - m'),
            and into the softmax-weighted mean of the dot products, rescaled the same way,
              E_r = sum_c P[r, c] <q_r, k_c>,   P[r, c] = exp(S[r, c] - lse_r).
            The tile is then dropped: only 2N numbers per direction are written. The column
            lse'_j and E'_j are the same kernel with the roles of Q and K[:N] swapped (S^T).
  dL/ds     d lse_i / ds = E_i and d S[i, o+i] / ds = <q_i, k_{o+i}>, so dL/ds is L's formula with
            every lse replaced by E and every logit by its dot product: computed in the forward,
            in fp32, and no backward pass is needed for it.
  backward  with w = 1/(2N) (symmetric) or 1/N (one way) and Y[i, o+i] = 1,
              G = w G',   G' = P + P'[first N columns, symmetric only] - (2 or 1) Y,
              dL/dQ = s w G' K,   dL/dK = s w G'^T Q.
            A program owns a block of rows and a chunk of D of dQ; it recomputes each tile of S
            from the saved lse's (one more matrix product, as in the tiled op), forms G' and
            accumulates G' K for its chunk of D. dK is the same kernel on S^T.

What changed from the first version, and why (a review against how Triton compiles for Hopper):
blocks of 64-128 rows instead of 16-64 (Hopper's warpgroup matrix instructions want 64-row
operands); D in chunks instead of one padded tile (fp32 at D = 768 no longer exceeds shared
memory); launches under the features' CUDA device (Triton launches on the current one);
w = 1/(2N) applied after the last product instead of folded into G' before its cast to fp16,
where its entries flushed to zero as N grew; dL/ds from the forward instead of from G' K.

Precision. Products accumulate in fp32 and every exp, max and sum is fp32. bf16/fp16 tiles are
multiplied on tensor cores; the backward rounds each tile of G' (entries in [-2, 2]) to the
features' dtype before G' K, as FlashAttention rounds its probabilities: gradients agree with
a float64 computation on the same (rounded) inputs to about 1e-3 relative. fp32 features use
full-fp32 products ("ieee", not TF32: CUDA cores, slower than torch.mm) and agree to about 1e-6,
as the tiled op does, unless the caller asks for bf16 products (loss.contrastive_loss(...,
impl="triton-bf16")): then fp32 tiles are rounded to bf16 on chip, loss and gradients are
those of the features rounded to bf16, and gradients come back in fp32. float64 is refused
(ValueError): use loss.TiledContrastiveLoss, which also serves gradcheck. The kernels need CUDA
tensors, or CPU tensors under TRITON_INTERPRET=1 (the Triton interpreter, which is how
tests/test_loss_triton.py checks them without a GPU).

impl="auto" (loss.contrastive_loss) calls auto_impl at the bottom: it decides by measurement.
"""

import os
import sys
import time
from contextlib import nullcontext

import torch
import triton
import triton.language as tl

import loss

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Largest difference from the tiled op allowed to impl="auto", relative to the largest entry of
# each result (value, dQ, dK, ds): fp32 products agree to ~1e-6; 16-bit ones round G'.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-2}


@triton.jit
def _load_rows(pointer, rows, num_rows, stride, dims, dim, TO_BF16: tl.constexpr):
    # x[rows, dims] of a row-major [num_rows, dim] tensor, zeros past its end; in bf16 if asked
    mask = (rows[:, None] < num_rows) & (dims[None, :] < dim)
    x = tl.load(pointer + rows[:, None].to(tl.int64) * stride + dims[None, :], mask=mask, other=0.0)
    if TO_BF16:
        x = x.to(tl.bfloat16)
    return x


@triton.jit
def _dot_tile(a_pointer, b_pointer, rows, columns, num_a, num_b, dim, stride_a, stride_b,
              BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, TO_BF16: tl.constexpr,
              PRECISION: tl.constexpr):
    # <a_r, b_c> for a [BLOCK_A, BLOCK_B] tile: sum over chunks of BLOCK_K dims, fp32 accumulator
    dots = tl.zeros([BLOCK_A, BLOCK_B], dtype=tl.float32)
    for start in range(0, dim, BLOCK_K):
        dims = start + tl.arange(0, BLOCK_K)
        a = _load_rows(a_pointer, rows, num_a, stride_a, dims, dim, TO_BF16)
        b = _load_rows(b_pointer, columns, num_b, stride_b, dims, dim, TO_BF16)
        dots = tl.dot(a, tl.trans(b), dots, input_precision=PRECISION)
    return dots


@triton.jit
def _lse_kernel(a_pointer, b_pointer, scale_pointer, lse_pointer, mean_dot_pointer, num_a, num_b, dim,
                stride_a, stride_b, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
                TO_BF16: tl.constexpr, PRECISION: tl.constexpr):
    # lse[r] = log sum_{c < num_b} exp(s <a_r, b_c>) and E[r] = sum_c P[r, c] <a_r, b_c> for this block of rows
    rows = tl.program_id(0) * BLOCK_A + tl.arange(0, BLOCK_A)
    s = tl.load(scale_pointer)
    running_max = tl.full([BLOCK_A], float("-inf"), tl.float32)
    running_sum = tl.zeros([BLOCK_A], tl.float32)
    running_dot = tl.zeros([BLOCK_A], tl.float32)  # sum_c exp(S[r, c] - m) <a_r, b_c>
    for start in range(0, num_b, BLOCK_B):
        columns = start + tl.arange(0, BLOCK_B)
        dots = _dot_tile(a_pointer, b_pointer, rows, columns, num_a, num_b, dim, stride_a, stride_b,
                         BLOCK_A, BLOCK_B, BLOCK_K, TO_BF16, PRECISION)
        # columns past the end count as exp(-inf) = 0 (their dots are 0: no NaN in the weighted sum)
        logits = tl.where(columns[None, :] < num_b, s * dots, float("-inf"))
        # online log-sum-exp: m' = max(m, max_c S), l' = l exp(m - m') + sum_c exp(S - m')
        new_max = tl.maximum(running_max, tl.max(logits, axis=1))
        rescale = tl.exp(running_max - new_max)
        weights = tl.exp(logits - new_max[:, None])
        running_sum = running_sum * rescale + tl.sum(weights, axis=1)
        running_dot = running_dot * rescale + tl.sum(weights * dots, axis=1)
        running_max = new_max
    tl.store(lse_pointer + rows, running_max + tl.log(running_sum), mask=rows < num_a)
    tl.store(mean_dot_pointer + rows, running_dot / running_sum, mask=rows < num_a)


@triton.jit
def _grad_kernel(a_pointer, b_pointer, scale_pointer, factor_pointer, a_lse_pointer, b_lse_pointer, grad_a_pointer,
                 num_a, num_b, num_a_lse, num_b_lse, dim, stride_a, stride_b, positive_diagonal, positive_weight,
                 BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_OUT: tl.constexpr,
                 TO_BF16: tl.constexpr, PRECISION: tl.constexpr):
    # grad_a[rows, out_dims] = factor (G' B)[rows, out_dims], factor = g s w, S = s A B^T and
    #   G'[r, c] = exp(S[r, c] - a_lse[r]) + exp(S[r, c] - b_lse[c]) - positive_weight [c - r = positive_diagonal]
    # An lse past num_*_lse is +inf, so its term is 0 (P' lives on the first N columns only).
    # dQ: A = Q, B = K, lse's (lse, lse'), diagonal o.   dK: A = K, B = Q, lse's (lse', lse), diagonal -o.
    rows = tl.program_id(0) * BLOCK_A + tl.arange(0, BLOCK_A)
    out_dims = tl.program_id(1) * BLOCK_OUT + tl.arange(0, BLOCK_OUT)
    s = tl.load(scale_pointer)
    a_lse = tl.load(a_lse_pointer + rows, mask=rows < num_a_lse, other=float("inf"))
    accumulator = tl.zeros([BLOCK_A, BLOCK_OUT], tl.float32)  # (G' B)[rows, out_dims]
    for start in range(0, num_b, BLOCK_B):
        columns = start + tl.arange(0, BLOCK_B)
        logits = s * _dot_tile(a_pointer, b_pointer, rows, columns, num_a, num_b, dim, stride_a, stride_b,
                               BLOCK_A, BLOCK_B, BLOCK_K, TO_BF16, PRECISION)
        b_lse = tl.load(b_lse_pointer + columns, mask=columns < num_b_lse, other=float("inf"))
        grad = tl.exp(logits - a_lse[:, None]) + tl.exp(logits - b_lse[None, :])
        grad = tl.where(columns[None, :] - rows[:, None] == positive_diagonal, grad - positive_weight, grad)
        # rows of B past its end load as zeros, so whatever G' holds there adds nothing to G' B
        b = _load_rows(b_pointer, columns, num_b, stride_b, out_dims, dim, TO_BF16)
        accumulator = tl.dot(grad.to(b.dtype), b, accumulator, input_precision=PRECISION)
    mask = (rows[:, None] < num_a) & (out_dims[None, :] < dim)
    grad_a = tl.load(factor_pointer) * accumulator
    tl.store(grad_a_pointer + rows[:, None].to(tl.int64) * stride_a + out_dims[None, :],
             grad_a.to(grad_a_pointer.dtype.element_ty), mask=mask)


def _configs(dtype, dim, bf16_products):
    """Block shapes and warps/stages of (the lse kernel, the grad kernel), for tiles of `dtype`.

    16-bit tiles (tensor cores): 128 x 128 logits with 8 warps, as FlashAttention-2 on Hopper.
    The grad kernel keeps a [64, 256] fp32 accumulator (64 registers a thread at 8 warps): D up
    to 256 in one program, D = 512 or 768 in 2 or 3 (each recomputes S). fp32 tiles (CUDA cores,
    4 bytes an element) take fewer rows. Compiled for sm_90 (`python tests/test_loss_triton.py
    hopper`), every kernel takes at most 144 KiB of shared memory (a block may have 227 KiB) and
    spills no registers. Chosen on paper for Hopper, not tuned on a GPU.
    """
    fp32_products = dtype == torch.float32 and not bf16_products
    if fp32_products:
        lse = {"BLOCK_A": 64, "BLOCK_B": 64, "BLOCK_K": 64, "num_warps": 4, "num_stages": 2}
        grad = {"BLOCK_A": 64, "BLOCK_B": 32, "BLOCK_K": 64, "BLOCK_OUT": 256, "num_warps": 8, "num_stages": 2}
    else:
        lse = {"BLOCK_A": 128, "BLOCK_B": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}
        grad = {"BLOCK_A": 64, "BLOCK_B": 64, "BLOCK_K": 64, "BLOCK_OUT": 256, "num_warps": 8, "num_stages": 2}
    widest = max(16, triton.next_power_of_2(dim))  # a chunk of D no wider than D itself (tl.dot: >= 16)
    for config in (lse, grad):
        config["BLOCK_K"] = min(config["BLOCK_K"], widest)
        # fp32 tiles: full fp32 products ("ieee", not TF32); 16-bit tiles: tensor cores (the default)
        config.update(TO_BF16=bf16_products, PRECISION="ieee" if fp32_products else "tf32")
    grad["BLOCK_OUT"] = min(grad["BLOCK_OUT"], widest)
    return lse, grad


def _lse(a, b, scale, bf16_products):
    """(lse, E), fp32 [len(a)] each: lse[r] = log sum_c exp(s <a_r, b_c>), E[r] = sum_c P[r, c] <a_r, b_c>."""
    lse, mean_dot = (torch.empty(a.shape[0], device=a.device, dtype=torch.float32) for _ in range(2))
    config, _ = _configs(a.dtype, a.shape[1], bf16_products)
    grid = (triton.cdiv(a.shape[0], config["BLOCK_A"]),)
    _lse_kernel[grid](a, b, scale, lse, mean_dot, a.shape[0], b.shape[0], a.shape[1], a.stride(0), b.stride(0),
                      **config)
    return lse, mean_dot


def _grad(a, b, scale, factor, a_lse, b_lse, positive_diagonal, positive_weight, bf16_products):
    """factor * G' B in a's dtype (see _grad_kernel)."""
    grad_a = torch.empty_like(a)
    _, config = _configs(a.dtype, a.shape[1], bf16_products)
    grid = (triton.cdiv(a.shape[0], config["BLOCK_A"]), triton.cdiv(a.shape[1], config["BLOCK_OUT"]))
    _grad_kernel[grid](a, b, scale, factor, a_lse, b_lse, grad_a, a.shape[0], b.shape[0], a_lse.shape[0],
                       b_lse.shape[0], a.shape[1], a.stride(0), b.stride(0), positive_diagonal, positive_weight,
                       **config)
    return grad_a


def _on_device(tensor):
    # Triton launches on the current CUDA device: make it the features' (train.py --device cuda:1)
    return torch.cuda.device(tensor.device) if tensor.is_cuda else nullcontext()


def _check_inputs(queries, keys, positive_offset, symmetric):
    if queries.dtype not in SUPPORTED_DTYPES or keys.dtype != queries.dtype:
        raise ValueError(f"TritonContrastiveLoss takes fp32, bf16 or fp16 features of one dtype, got "
                         f"{queries.dtype} and {keys.dtype} (float64: use loss.TiledContrastiveLoss)")
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"features must be [N, D] and [M, D], got {tuple(queries.shape)} and {tuple(keys.shape)}")
    if queries.device != keys.device:
        raise ValueError(f"queries and keys must be on one device, got {queries.device} and {keys.device}")
    n, m = queries.shape[0], keys.shape[0]
    if positive_offset + n > m:
        raise ValueError(f"row i's positive is column {positive_offset} + i: {n} rows need at least "
                         f"{positive_offset + n} columns, got {m}")
    if symmetric and positive_offset != 0:
        raise ValueError("the column term pairs column j with row j: symmetric=True needs positive_offset=0")
    if not queries.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError("TritonContrastiveLoss needs CUDA tensors (or TRITON_INTERPRET=1 set before "
                         "triton is imported, to run the kernels on the CPU)")


class TritonContrastiveLoss(torch.autograd.Function):
    """loss.TiledContrastiveLoss without its chunk_size, as fused Triton kernels (see the top).

    apply(queries, keys, logit_scale, positive_offset, symmetric, bf16_products=False): queries
    [N, D], keys [M, D] (fp32, bf16 or fp16, one dtype), logit_scale a 0-dim tensor (the
    multiplier itself); bf16_products: fp32 tiles rounded to bf16 on chip (tensor cores).
    Returns an fp32 scalar; gradients come back in the inputs' dtypes.
    """

    @staticmethod
    def forward(ctx, queries, keys, logit_scale, positive_offset, symmetric, bf16_products=False):
        _check_inputs(queries, keys, positive_offset, symmetric)
        q, k = queries.contiguous(), keys.contiguous()
        n = q.shape[0]
        scale = logit_scale.detach().to(device=q.device, dtype=torch.float32).reshape(1)
        with _on_device(q):
            row_lse, row_mean_dot = _lse(q, k, scale, bf16_products)
            if symmetric:  # lse'_j and E'_j over the N rows, j < N: the row quantities of S^T's first N rows
                column_lse, column_mean_dot = _lse(k[:n], q, scale, bf16_products)
        # the positives' dot products <q_i, k_{o+i}>, one per row, from the tiles' (rounded) values
        tile = torch.bfloat16 if bf16_products else q.dtype
        positive_dots = torch.linalg.vecdot(q.to(tile).float(), k[positive_offset:positive_offset + n].to(tile).float())
        positives = scale * positive_dots
        # L = mean(lse - S[i, o+i]) (+ the column term);  dL/ds = mean(E - <q_i, k_{o+i}>) (+ the column term)
        loss, scale_grad = (row_lse - positives).mean(), (row_mean_dot - positive_dots).mean()
        if symmetric:
            loss = 0.5 * (loss + (column_lse - positives).mean())
            scale_grad = 0.5 * (scale_grad + (column_mean_dot - positive_dots).mean())
        ctx.save_for_backward(q, k, logit_scale, row_lse, column_lse if symmetric else None, scale_grad)
        ctx.positive_offset, ctx.symmetric, ctx.bf16_products = positive_offset, symmetric, bf16_products
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        q, k, logit_scale, row_lse, column_lse, scale_grad = ctx.saved_tensors
        offset, symmetric, bf16_products = ctx.positive_offset, ctx.symmetric, ctx.bf16_products
        n = q.shape[0]
        weight = 0.5 / n if symmetric else 1.0 / n
        scale = logit_scale.detach().to(device=q.device, dtype=torch.float32).reshape(1)
        grad_loss = grad_loss.to(device=q.device, dtype=torch.float32).reshape(1)
        # G = w G': w is applied after the product (factor g s w), so G' keeps its precision in 16 bits
        factor = grad_loss * scale * weight
        column_lse = column_lse if symmetric else row_lse[:0]  # no P' one way
        positive_weight = 2.0 if symmetric else 1.0
        with _on_device(q):
            # dL/dQ = s w G' K;  dL/dK = s w G'^T Q
            grad_q = _grad(q, k, scale, factor, row_lse, column_lse, offset, positive_weight, bf16_products)
            grad_k = _grad(k, q, scale, factor, column_lse, row_lse, -offset, positive_weight, bf16_products)
        grad_scale = (grad_loss * scale_grad).to(device=logit_scale.device, dtype=logit_scale.dtype)
        return grad_q, grad_k, grad_scale.reshape(logit_scale.shape), None, None, None


# ---------------------------------------------------------------------------------------------
# impl="auto": decided by evidence, never by hope
# ---------------------------------------------------------------------------------------------
#
# The first call of each kind (device, dtype, D, one way or not, size classes of N and M: the
# powers of two they fall between) runs both the Triton kernel and the tiled op, forward and
# backward, on copies of that batch: the kernel must match the tiled op's value and gradients
# within TOLERANCE. Then both are timed AUTO_TIMED_RUNS times, interleaved, and the faster (by
# its best time) is kept for the rest of the process, with one line on stderr saying which and
# why. An exception from the kernel (no GPU support, out of resources, out of memory) or a
# mismatch means the tiled op, with one warning line. The check costs a few extra forward and
# backward passes once per kind of call.

AUTO_TIMED_RUNS = 3
AUTO_CHOICES = {}  # kind of call -> "triton" or "tiled": what impl="auto" decided in this process


def auto_impl(queries, keys, logit_scale, positive_offset, symmetric, chunk_size):
    """"triton" or "tiled" for this call of impl="auto", decided once per kind of call (see above)."""
    if queries.dtype not in SUPPORTED_DTYPES or keys.dtype != queries.dtype:
        return "tiled"  # float64 (gradcheck), mixed dtypes: the kernel does not take them
    n, m = queries.shape[0], keys.shape[0]
    kind = (str(queries.device), queries.dtype, queries.shape[1], symmetric, n.bit_length(), m.bit_length())
    if kind not in AUTO_CHOICES:
        what = (f'contrastive_loss impl="auto" on {queries.device} ({str(queries.dtype).removeprefix("torch.")}, '
                f"D {queries.shape[1]}, N in [{2 ** (n.bit_length() - 1)}, {2 ** n.bit_length()}), "
                f"M in [{2 ** (m.bit_length() - 1)}, {2 ** m.bit_length()}){'' if symmetric else ', one way'})")
        AUTO_CHOICES[kind], reason, warned = _decide(queries, keys, logit_scale, positive_offset, symmetric,
                                                     chunk_size)
        print(f"{'warning: ' if warned else ''}{what}: {reason}", file=sys.stderr, flush=True)
    return AUTO_CHOICES[kind]


def _decide(queries, keys, logit_scale, positive_offset, symmetric, chunk_size):
    """(choice, why, whether that is a warning) for one batch: checked, then timed."""
    implementations = {
        "tiled": lambda q, k, s: loss.TiledContrastiveLoss.apply(q, k, s, positive_offset, symmetric, chunk_size),
        "triton": lambda q, k, s: TritonContrastiveLoss.apply(q, k, s, positive_offset, symmetric)}
    synchronize = torch.cuda.synchronize if queries.is_cuda else lambda *_: None

    def run(name):
        """[value, dQ, dK, ds] of one forward and backward on copies of the batch, and its seconds."""
        q, k = (x.detach().clone().requires_grad_() for x in (queries, keys))
        s = logit_scale.detach().float().clone().requires_grad_()
        synchronize(queries.device)
        start = time.perf_counter()
        with torch.enable_grad(), torch.autocast(queries.device.type, enabled=False):
            value = implementations[name](q, k, s)
            value.backward()
        synchronize(queries.device)
        return [value.detach(), q.grad, k.grad, s.grad], time.perf_counter() - start

    expected, _ = run("tiled")  # also the tiled op's warm-up
    tolerance = TOLERANCE[queries.dtype]
    try:
        got, _ = run("triton")  # also the kernels' compilation
        worst = max(relative_error(g, e) for g, e in zip(got, expected))
        if not worst <= tolerance:  # NaN too
            return "tiled", (f"the Triton kernel differs from the tiled op by {worst:.1e} (tolerance "
                             f"{tolerance:.0e}); using the tiled op"), True
        seconds = {name: [] for name in implementations}
        for _ in range(AUTO_TIMED_RUNS):
            for name in implementations:
                seconds[name].append(run(name)[1])
    except Exception as error:  # noqa: BLE001  (any failure of the kernel means the tiled op)
        message = " ".join(str(error).split())[:300]
        return "tiled", f"the Triton kernel failed ({type(error).__name__}: {message}); using the tiled op", True
    triton_seconds, tiled_seconds = min(seconds["triton"]), min(seconds["tiled"])
    choice, other = ("triton", "tiled") if triton_seconds < tiled_seconds else ("tiled", "triton")
    ratio = max(triton_seconds, tiled_seconds) / min(triton_seconds, tiled_seconds)
    return choice, (f"{choice}, {ratio:.2f}x faster than {other} (forward+backward, best of {AUTO_TIMED_RUNS}: "
                    f"triton {1e3 * triton_seconds:.3g} ms, tiled {1e3 * tiled_seconds:.3g} ms); "
                    f"values and gradients within {worst:.1e} of each other (tolerance {tolerance:.0e})"), False


def relative_error(got, expected):
    """max |got - expected| over max |expected| (the plain difference where expected is all zeros)."""
    difference = (got.double() - expected.double()).abs().max().item()
    largest = expected.double().abs().max().item()
    return difference / largest if largest > 0 else difference

