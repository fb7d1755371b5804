"""CLIP's contrastive loss as fused Triton kernels: the logits live only in registers.

The same loss and the same notation as loss.TiledContrastiveLoss: queries Q [N, D] (images),
keys K [M, D] (texts), scale s, logits S = s Q K^T, row i's positive at column o + i.

  row term     L_row = 1/N sum_i (lse_i - S[i, o+i]),     lse_i  = log sum_{j<M} exp S[i, j]
  column term  L_col = 1/N sum_j (lse'_j - S[j, j]),      lse'_j = log sum_{i<N} exp S[i, j],  j < N
  loss         L = 1/2 (L_row + L_col)   (symmetric, needs o = 0)   or   L = L_row   (one way)

The tiled op computes S a band of rows at a time with torch.mm, so on a GPU each band is written
to global memory and read back for the exp and the sums. Here each Triton program owns a block
of rows of S and streams blocks of columns past it, as FlashAttention streams keys past queries:

  forward   a program loads its block of queries once and, for every block of keys, computes
            the tile S = s q k^T with tl.dot and folds it into a running log-sum-exp:
              m' = max(m, max_j S[i, j]),   l' = l exp(m - m') + sum_j exp(S[i, j] - m'),
            and at the end lse_i = m + log l. The tile is then dropped: only N numbers are written.
            The column lse'_j is the row lse of S^T = s K Q^T restricted to its first N rows,
            so the same kernel computes it with the roles of Q and K[:N] swapped.
  backward  with w = 1/(2N) (symmetric) or 1/N (one way), P = exp(S - lse) row-wise and
            P' = exp(S - lse') column-wise, the gradient of L with respect to S is
              G = w P + w P'[first N columns, symmetric only] - (2w or w) Y,   Y[i, o+i] = 1,
            and  dL/dQ = s G K,  dL/dK = s G^T Q,  dL/ds = sum_i <q_i, (G K)_i>.
            A program owns a block of rows of dQ, recomputes each tile of S from the saved
            lse's (one more matrix product than a saved-logits backward, as in the tiled op),
            forms the tile of G and accumulates G K. dK = s G^T Q is the same computation on
            S^T (rows and columns, lse and lse', swap), so one kernel serves both passes.

Global memory traffic is O((N + M) D) reads per block of rows, and nothing N x M (or chunk x M)
is ever allocated: the forward saves 2N floats, the backward writes only dQ, dK and N partial
sums for dL/ds.

Precision. Tiles are loaded in the features' dtype (bf16, fp16 or fp32); tl.dot accumulates in
fp32 and every exp, max and sum is fp32. For fp32 inputs the products are full fp32 ("ieee",
not TF32), so loss and gradients agree with a float64 computation to about 1e-6 relative, as
the tiled op's do. For bf16/fp16 the backward casts each tile of G to the features' dtype
before the second product (as FlashAttention does with its probabilities). float64 is not
supported (ValueError): use loss.TiledContrastiveLoss, which also serves gradcheck. The
kernels need CUDA tensors, or CPU tensors under TRITON_INTERPRET=1 (the Triton interpreter,
which is how tests/test_loss_triton.py checks them without a GPU).
"""

import math
import os

import torch
import triton
import triton.language as tl

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _block_size(dim_padded, element_size):
    # Rows per tile: a [BLOCK, D] tile of at most 32 KiB, so a program's tiles, pipelined a few
    # stages deep, fit the shared memory of one H100/H200 multiprocessor (228 KiB): 64 rows up
    # to D = 256 in bf16, 32 at D = 512. At least 16, the smallest tl.dot operand.
    # A first choice, not tuned on a GPU.
    return max(16, min(64, 32768 // (dim_padded * element_size)))


@triton.jit
def _load_rows(pointer, rows, num_rows, stride, dims, dim):
    # x[rows, dims] of a row-major [num_rows, dim] tensor; zeros past its end
    mask = (rows[:, None] < num_rows) & (dims[None, :] < dim)
    return tl.load(pointer + rows[:, None].to(tl.int64) * stride + dims[None, :], mask=mask, other=0.0)


@triton.jit
def _lse_kernel(a_pointer, b_pointer, scale_pointer, lse_pointer, num_a, num_b, dim, stride_a, stride_b,
                BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    # lse[r] = log sum_{c < num_b} exp(s <a_r, b_c>) for this program's block of rows r of A
    rows = tl.program_id(0) * BLOCK_A + tl.arange(0, BLOCK_A)
    dims = tl.arange(0, BLOCK_D)
    a = _load_rows(a_pointer, rows, num_a, stride_a, dims, dim)
    s = tl.load(scale_pointer)
    running_max = tl.full([BLOCK_A], float("-inf"), tl.float32)
    running_sum = tl.zeros([BLOCK_A], tl.float32)
    for start in range(0, num_b, BLOCK_B):
        columns = start + tl.arange(0, BLOCK_B)
        b = _load_rows(b_pointer, columns, num_b, stride_b, dims, dim)
        # the tile S[r, c] = s <a_r, b_c>; columns past the end count as exp(-inf) = 0
        logits = s * tl.dot(a, tl.trans(b), input_precision="ieee")
        logits = tl.where(columns[None, :] < num_b, logits, float("-inf"))
        # online log-sum-exp: m' = max(m, max_c S), l' = l exp(m - m') + sum_c exp(S - m')
        new_max = tl.maximum(running_max, tl.max(logits, axis=1))
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(logits - new_max[:, None]), axis=1)
        running_max = new_max
    tl.store(lse_pointer + rows, running_max + tl.log(running_sum), mask=rows < num_a)


@triton.jit
def _grad_kernel(a_pointer, b_pointer, scale_pointer, grad_loss_pointer, a_shift_pointer, b_shift_pointer,
                 grad_a_pointer, scale_grad_pointer, num_a, num_b, num_a_shift, num_b_shift, dim,
                 stride_a, stride_b, positive_diagonal, positive_weight,
                 BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    # grad_a = g s G B for this program's block of rows of A, where g = dloss, S = s A B^T and
    #   G[r, c] = exp(S[r, c] - a_shift[r]) + exp(S[r, c] - b_shift[c]) - positive_weight [c - r = positive_diagonal]
    # Shifts are lse - log w; a shift past num_*_shift is +inf, so its term is 0 (P' lives on the
    # first N columns only). dQ: A = Q, B = K, shifts (lse, lse'), diagonal o.
    # dK: A = K, B = Q, shifts (lse', lse), diagonal -o.
    rows = tl.program_id(0) * BLOCK_A + tl.arange(0, BLOCK_A)
    dims = tl.arange(0, BLOCK_D)
    a = _load_rows(a_pointer, rows, num_a, stride_a, dims, dim)
    s = tl.load(scale_pointer)
    g = tl.load(grad_loss_pointer)
    a_shift = tl.load(a_shift_pointer + rows, mask=rows < num_a_shift, other=float("inf"))
    accumulator = tl.zeros([BLOCK_A, BLOCK_D], tl.float32)  # (G B) for these rows
    for start in range(0, num_b, BLOCK_B):
        columns = start + tl.arange(0, BLOCK_B)
        # rows of B past its end load as zeros, so whatever G holds there adds nothing to G B
        b = _load_rows(b_pointer, columns, num_b, stride_b, dims, dim)
        b_shift = tl.load(b_shift_pointer + columns, mask=columns < num_b_shift, other=float("inf"))
        logits = s * tl.dot(a, tl.trans(b), input_precision="ieee")
        grad = tl.exp(logits - a_shift[:, None]) + tl.exp(logits - b_shift[None, :])
        grad = tl.where(columns[None, :] - rows[:, None] == positive_diagonal, grad - positive_weight, grad)
        accumulator = tl.dot(grad.to(b.dtype), b, accumulator, input_precision="ieee")
    mask = (rows[:, None] < num_a) & (dims[None, :] < dim)
    grad_a = (g * s) * accumulator
    tl.store(grad_a_pointer + rows[:, None].to(tl.int64) * stride_a + dims[None, :],
             grad_a.to(grad_a_pointer.dtype.element_ty), mask=mask)
    if scale_grad_pointer is not None:
        # dL/ds = sum_r <a_r, (G B)_r>: this block's share of the sum, times g
        tl.store(scale_grad_pointer + rows, g * tl.sum(a.to(tl.float32) * accumulator, axis=1), mask=rows < num_a)


def _launch_config(a):
    block_d = max(16, triton.next_power_of_2(a.shape[1]))
    block = _block_size(block_d, a.element_size())
    return {"BLOCK_A": block, "BLOCK_B": block, "BLOCK_D": block_d, "num_warps": 4 if block_d <= 128 else 8}


def _lse(a, b, scale):
    """lse[r] = log sum_c exp(s <a_r, b_c>), fp32 [len(a)]."""
    lse = torch.empty(a.shape[0], device=a.device, dtype=torch.float32)
    config = _launch_config(a)
    grid = (triton.cdiv(a.shape[0], config["BLOCK_A"]),)
    _lse_kernel[grid](a, b, scale, lse, a.shape[0], b.shape[0], a.shape[1], a.stride(0), b.stride(0), **config)
    return lse


def _grad(a, b, scale, grad_loss, a_shift, b_shift, positive_diagonal, positive_weight, with_scale_grad):
    """g s G B in a's dtype, and (if asked) the per-row shares of dL/ds, fp32 [len(a)], else None."""
    grad_a = torch.empty_like(a)
    scale_grad = torch.empty(a.shape[0], device=a.device, dtype=torch.float32) if with_scale_grad else None
    config = _launch_config(a)
    grid = (triton.cdiv(a.shape[0], config["BLOCK_A"]),)
    _grad_kernel[grid](a, b, scale, grad_loss, a_shift, b_shift, grad_a, scale_grad,
                       a.shape[0], b.shape[0], a_shift.shape[0], b_shift.shape[0], a.shape[1],
                       a.stride(0), b.stride(0), positive_diagonal, positive_weight, **config)
    return grad_a, scale_grad


def _check_inputs(queries, keys, positive_offset, symmetric):
    if queries.dtype not in SUPPORTED_DTYPES or keys.dtype != queries.dtype:
        raise ValueError(f"TritonContrastiveLoss takes fp32, bf16 or fp16 features of one dtype, got "
                         f"{queries.dtype} and {keys.dtype} (float64: use loss.TiledContrastiveLoss)")
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"features must be [N, D] and [M, D], got {tuple(queries.shape)} and {tuple(keys.shape)}")
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

    apply(queries, keys, logit_scale, positive_offset, symmetric): queries [N, D], keys [M, D]
    (fp32, bf16 or fp16, one dtype), logit_scale a 0-dim tensor (the multiplier itself).
    Returns an fp32 scalar; gradients come back in the inputs' dtypes.
    """

    @staticmethod
    def forward(ctx, queries, keys, logit_scale, positive_offset, symmetric):
        _check_inputs(queries, keys, positive_offset, symmetric)
        q, k = queries.contiguous(), keys.contiguous()
        n = q.shape[0]
        scale = logit_scale.to(device=q.device, dtype=torch.float32).reshape(1)
        # lse_i over all M columns; the positives S[i, o+i], one dot product per row
        row_lse = _lse(q, k, scale)
        positives = scale * torch.linalg.vecdot(q.float(), k[positive_offset:positive_offset + n].float())
        loss = (row_lse - positives).mean()
        column_lse = None
        if symmetric:
            # lse'_j over the N rows, j < N: the row lse of S^T's first N rows
            column_lse = _lse(k[:n], q, scale)
            loss = 0.5 * (loss + (column_lse - positives).mean())
        ctx.save_for_backward(q, k, logit_scale, row_lse, column_lse)
        ctx.positive_offset, ctx.symmetric = positive_offset, symmetric
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        q, k, logit_scale, row_lse, column_lse = ctx.saved_tensors
        offset, symmetric = ctx.positive_offset, ctx.symmetric
        n = q.shape[0]
        weight = 0.5 / n if symmetric else 1.0 / n
        scale = logit_scale.to(device=q.device, dtype=torch.float32).reshape(1)
        grad_loss = grad_loss.to(device=q.device, dtype=torch.float32).reshape(1)
        # w P = exp(S - lse + log w): the weight folded into the shifts; no column term one way
        row_shift = row_lse - math.log(weight)
        column_shift = column_lse - math.log(weight) if symmetric else row_shift[:0]
        positive_weight = 2 * weight if symmetric else weight
        # dL/dQ = s G K (and dL/ds from the same pass); dL/dK = s G^T Q
        grad_q, scale_grad = _grad(q, k, scale, grad_loss, row_shift, column_shift, offset, positive_weight, True)
        grad_k, _ = _grad(k, q, scale, grad_loss, column_shift, row_shift, -offset, positive_weight, False)
        grad_scale = scale_grad.sum().to(logit_scale.dtype).reshape(logit_scale.shape)
        return grad_q, grad_k, grad_scale, None, None
