"""SemCLIP's loss, from scratch, in the order a student learns it.

SemCLIP (Ngan, Sadeghi Afgeh, Townsend, d'Avila Garcez, arXiv 2511.16527) trains CLIP on
caption triplets (original t, paraphrase t+, negation t-) with CLIP's contrastive loss plus two
text-side terms measured in a small projection subspace:

  1. contrastive_loss_reference    CLIP's loss in a few lines: the definition.
  2. SemCLIPLoss, LOSS_VARIANTS    the paper: L_clip + L_para + L_neg, the ablations train.py
                                   --loss selects, and L_truth (this project's, a two-way
                                   case of NegBench's multiple choice) for what negation means.
  3. contrastive_loss              the engineering: CLIP's loss without ever holding the N x M
                                   logits, a tiled autograd.Function with a hand-written backward
                                   (impl="triton": the fused GPU kernel in loss_triton.py).
  4. distributed_contrastive_loss  the same loss across processes (torchrun), each process
                                   computing its own rows against the global batch.
  5. sigmoid_loss                  SigLIP's per-pair alternative to the softmax (an option).
  6. conclip_loss                  CoN-CLIP's three terms with distractor images (a baseline).

All embeddings are L2-normalised rows ([N, D], what CLIP.encode_image / encode_text return);
`logit_scale` is the multiplier itself (the model's parameter already exp'd and clamped).
"""

import importlib.util
import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrizations

# ---------------------------------------------------------------------------------------------
# 1. CLIP's contrastive loss, the plain way
# ---------------------------------------------------------------------------------------------


def one_way_contrastive_loss_reference(queries, keys, logit_scale, positive_offset=0):
    """Mean over rows i of cross_entropy(s * q_i K^T, target positive_offset + i).

    queries [N, D] against keys [M, D], M >= positive_offset + N: one direction of CLIP's loss.
    """
    # logits[i, j] = s * <q_i, k_j>
    logits = logit_scale * queries @ keys.t()
    labels = positive_offset + torch.arange(queries.shape[0], device=logits.device)
    # L = 1/N sum_i -log softmax_j(logits[i, :])[o + i]
    return F.cross_entropy(logits, labels)


def contrastive_loss_reference(image_features, text_features, logit_scale, chunk_size=None):
    """CLIP's symmetric InfoNCE with F.cross_entropy. Materialises the N x M logits.

    image_features [N, D], text_features [M, D], M >= N. Row i's positive is column i. Columns
    N..M-1 (e.g. negated captions) are extra negatives for image->text only. `chunk_size` is
    accepted for the shared signature and ignored.
    """
    n = image_features.shape[0]
    # L_clip = 1/2 (CE(image -> all M texts) + CE(first N texts -> images))
    image_to_text = one_way_contrastive_loss_reference(image_features, text_features, logit_scale)
    text_to_image = one_way_contrastive_loss_reference(text_features[:n], image_features, logit_scale)
    return 0.5 * (image_to_text + text_to_image)


# ---------------------------------------------------------------------------------------------
# 2. SemCLIP
# ---------------------------------------------------------------------------------------------
#
#   p(x)    = normalize(B x)                     B: K x D, orthonormal rows (K = 2, fixed random)
#   L_clip  = CLIP's loss on (image, original caption) pairs (section 1)
#   L_para  = mean(1 - cos(p(t), p(t+)))         pull paraphrases onto the original
#   L_neg   = mean(max(0, cos(p(t), p(t-))))     push negations >= 90 degrees away
#   L_total = (a L_clip + b L_para + c L_neg) / (a + b + c)
#
# An option beyond the paper: the paraphrase term in its own subspace, B_para: K_para x D,
#   L_para = mean(1 - cos(p_para(t), p_para(t+))),   p_para(x) = normalize(B_para x)
# K_para = D makes B_para a rotation, so L_para acts on the full embedding: cos(t, t+).
#
# Another, this project's (not the paper's), for the negation's meaning: L_neg only says t- is far
# from t, which a model meets by pushing every text with "no" away from everything. A true negation
# t° (the record's `true_negation`: a true statement that negates an ABSENT object, "a red circle
# but no blue cross") must instead beat the false one t- for the image itself: a two-way case of
# NegBench's multiple-choice objective (Alhamoud et al., CVPR 2025: the image picks its true
# caption among affirmed, negated and hybrid ones), on the image-text cosines (weight d > 0):
#   L_truth = mean(-log(e^{s cos(I, t°)} / (e^{s cos(I, t°)} + e^{s cos(I, t-)})))
#           = mean(softplus(s (cos(I, t-) - cos(I, t°))))
#   L_total = (a L_clip + b L_para + c L_neg + d L_truth) / (a + b + c + d)


# train.py --loss NAME builds SemCLIPLoss(embed_dim, **LOSS_VARIANTS[NAME])
LOSS_VARIANTS = {
    # SemCLIP (arXiv 2511.16527): contrastive + paraphrase + negation terms
    "semclip": {},
    # CLIP (Radford et al. 2021): the contrastive term alone
    "clip": {"paraphrase_weight": 0.0, "negation_weight": 0.0},
    # NegCLIP (Yuksekgonul et al. 2023) / CoN-CLIP text side (Singh et al. 2024): negated
    # captions as hard negatives in the contrastive term, no projection terms
    "negclip": {"paraphrase_weight": 0.0, "negation_weight": 0.0, "negatives_in_contrastive": True},
    # SemCLIP's terms plus NegCLIP's hard negatives: the negations are also wrong answers for the image
    "semclip_hn": {"negatives_in_contrastive": True},
    # semclip_hn plus L_truth: each image must prefer its true negation t° to its false one t-
    "semclip_tn": {"negatives_in_contrastive": True, "truth_weight": 1.0},
    # CoN-CLIP (Singh et al. 2024): negated captions and distractor images in three
    # contrastive terms (section 6), no projection terms
    "conclip": {"paraphrase_weight": 0.0, "negation_weight": 0.0, "contrastive": "conclip"},
    # SigLIP (Zhai et al. 2023) in place of CLIP's softmax, with the SemCLIP terms
    "siglip": {"contrastive": "sigmoid"},
}


def cosine(a, b):
    """cos(a_i, b_i) per row of unit embeddings; NaN where b was not given (the term is then not measured)."""
    return a.new_full(a.shape[:1], float("nan")) if b is None else (a * b).sum(-1)


class SemCLIPLoss(nn.Module):
    """L_total = (a L_clip + b L_para + c L_neg + d L_truth) / (a + b + c + d), a..d = the weights.

    forward takes L2-normalised [N, D] embeddings of the images, captions t, paraphrases t+,
    negations t- (by keyword: true negations t°, CoN-CLIP's distractor images) and returns
    {"loss", one entry per term}. A term whose texts were passed as None reports NaN (not
    measured), allowed only at weight 0. contrastive="conclip": CoN-CLIP's L_clip (section 6);
    "sigmoid": SigLIP's, with a learnable bias this module owns (give the optimizer this module's
    parameters, also for learnable_projections). contrastive_impl: how L_clip is computed
    (section 3), the same numbers every way. Under torchrun each term is this process's share of
    the global-batch loss (section 4). Where the authors' code departs from the equations (their
    CLIP term gets un-normalised features and a fresh, unclamped logit scale), this follows the equations.
    """

    # the optional text fields forward() takes after the caption (paraphrase, negation; the rest by name)
    TEXT_FIELDS = ("paraphrase", "negation", "true_negation")
    # the optional image fields forward() takes by name
    IMAGE_FIELDS = ("distractor",)
    FIELDS = TEXT_FIELDS + IMAGE_FIELDS

    def __init__(self, embed_dim, contrastive_weight=1.0, paraphrase_weight=1.0, negation_weight=1.0,
                 num_projections=2, learnable_projections=False, normalize_projections=True,
                 negatives_in_contrastive=False, seed=0, contrastive="softmax", contrastive_impl="auto",
                 num_paraphrase_projections=None, truth_weight=0.0):
        super().__init__()
        if contrastive_weight + paraphrase_weight + negation_weight + truth_weight <= 0:
            raise ValueError("the loss weights must have a positive sum")
        if contrastive not in ("softmax", "sigmoid", "conclip"):
            raise ValueError(f"contrastive must be 'softmax', 'sigmoid' or 'conclip', not {contrastive!r}")
        check_impl(contrastive_impl)
        if max(num_projections, num_paraphrase_projections or 0) > embed_dim:
            raise ValueError(f"a projection keeps at most the embedding's {embed_dim} dimensions")
        # L_truth is a term only where it is weighted (d > 0): other variants neither need nor log t°
        self.weights = {"contrastive": contrastive_weight, "paraphrase": paraphrase_weight,
                        "negation": negation_weight, **({"truth": truth_weight} if truth_weight else {})}
        self.normalize_projections = normalize_projections
        self.negatives_in_contrastive = negatives_in_contrastive
        self.contrastive, self.contrastive_impl = contrastive, contrastive_impl
        # B: K x D with orthonormal rows, a random K-dimensional subspace fixed by the seed (QR of a
        # Gaussian matrix). K = 1 makes cos(p(t), p(t')) a mere sign, with no gradient: use K >= 2.
        gaussian = torch.randn(embed_dim, num_projections, generator=torch.Generator().manual_seed(seed))
        basis = torch.linalg.qr(gaussian).Q.t().contiguous()
        if learnable_projections:
            # learnable B stays orthonormal: `basis` is recomputed from an unconstrained
            # parameter through an orthogonal parametrization (initialised to the same B)
            self.basis = nn.Parameter(basis)
            parametrizations.orthogonal(self, "basis")
        else:
            self.register_buffer("basis", basis)
        # B_para: the paraphrase term's own fixed basis, or None: it shares B (the paper)
        self.register_buffer("paraphrase_basis", None if num_paraphrase_projections is None else torch.linalg.qr(
            torch.randn(embed_dim, num_paraphrase_projections, generator=torch.Generator().manual_seed(seed + 1))
        ).Q.t().contiguous())
        if contrastive == "sigmoid":
            self.logit_bias = nn.Parameter(torch.tensor(-10.0))

    def forward(self, image, text, paraphrase, negation, logit_scale, distractor=None, true_negation=None):
        # L_clip on (image, original caption) pairs; NegCLIP adds the negations as extra negatives;
        # CoN-CLIP replaces it with its three terms
        l_clip = self.contrastive_term(image, text, negation, distractor, logit_scale)
        # L_para = mean(1 - cos(p(t), p(t+)))        pull paraphrases onto the original
        l_para = (1 - self.projected_cosine(text, paraphrase, self.paraphrase_basis)).mean()
        # L_neg = mean(max(0, cos(p(t), p(t-))))     push negations >= 90 degrees away
        l_neg = F.relu(self.projected_cosine(text, negation)).mean()
        terms = {"contrastive": l_clip, "paraphrase": l_para, "negation": l_neg}
        if "truth" in self.weights:
            # L_truth = mean(softplus(s (cos(I, t-) - cos(I, t°))))   the image picks t° over t-
            terms["truth"] = F.softplus(logit_scale * (cosine(image, negation) - cosine(image, true_negation))).mean()
        # L_total = (a L_clip + b L_para + c L_neg + d L_truth) / (a + b + c + d)
        given = dict(paraphrase=paraphrase, negation=negation, distractor=distractor, true_negation=true_negation)
        return {"loss": self.weighted_mean(terms, given), **terms}

    # ----- the bookkeeping: which fields each term reads, what is missing, how terms combine

    def project(self, embeddings, basis=None):
        # p(x) = normalize(B x)   (B_para x for the paraphrase term when it has its own basis).
        # Only the subspace matters: p(x) . p(y) is unchanged by any rotation of the basis within
        # it. With normalize_projections=False, p(x) = B x and the terms use raw inner products
        # (|B x| <= 1 for unit x); in the authors' code the flag changes nothing (they normalise).
        projections = embeddings @ (self.basis if basis is None else basis).t()
        return F.normalize(projections, dim=-1) if self.normalize_projections else projections

    def projected_cosine(self, a, b, basis=None):
        """cos(p(a), p(b)) per row; NaN where b was not given (the term is then not measured)."""
        if b is None:
            return a.new_full(a.shape[:1], float("nan"))
        return (self.project(a, basis) * self.project(b, basis)).sum(-1)

    def contrastive_term(self, image, text, negation, distractor, logit_scale):
        given = {"negation": negation, "distractor": distractor}
        if any(given[field] is None for field in self.term_inputs()["contrastive"]):
            return image.new_full((), float("nan"))  # not measured
        if self.contrastive == "conclip":
            return conclip_loss(image, text, negation, distractor, logit_scale, impl=self.contrastive_impl)
        negation = negation if self.negatives_in_contrastive else None
        if self.contrastive == "softmax":
            return distributed_contrastive_loss(image, text, logit_scale, negation, impl=self.contrastive_impl)
        columns = [text] if negation is None else [text, negation]
        keys = torch.cat([gather_features(c) for c in columns])
        offset = _rank_and_world_size()[0] * image.shape[0]
        return sigmoid_loss(image, keys, logit_scale, self.logit_bias, offset)

    def weighted_mean(self, terms, given):
        """(sum_k w_k L_k) / (sum_k w_k). A weight-0 term is only reported (NaN where its texts
        were not given); a weighted term must have its texts."""
        for name, fields in self.term_inputs().items():
            missing = [field for field in fields if given[field] is None]
            if missing and self.weights[name] != 0:
                raise ValueError(f"SemCLIPLoss: the {name} term (weight {self.weights[name]}) needs "
                                 f"{missing[0]} embeddings, which were passed as None")
        return sum(w * terms[name] for name, w in self.weights.items() if w != 0) / sum(self.weights.values())

    def term_inputs(self):
        """The fields each term reads besides the image and the caption."""
        contrastive = {"conclip": ("negation", "distractor")}.get(self.contrastive, ())
        return {"contrastive": ("negation",) if self.negatives_in_contrastive else contrastive,
                "paraphrase": ("paraphrase",), "negation": ("negation",),
                **({"truth": ("true_negation", "negation")} if "truth" in self.weights else {})}

    def _used(self, fields):
        used = {field for name, inputs in self.term_inputs().items() if self.weights[name] != 0 for field in inputs}
        return tuple(field for field in fields if field in used)

    @property
    def texts(self):
        """The text fields the weighted terms train on: what the training data must have."""
        return self._used(self.TEXT_FIELDS)

    @property
    def logged_texts(self):
        """The text fields any term reads, weighted or not: given them, every term is logged."""
        return tuple(f for f in self.TEXT_FIELDS if any(f in inputs for inputs in self.term_inputs().values()))

    @property
    def images(self):
        """The image fields the weighted terms train on (CoN-CLIP's distractor images)."""
        return self._used(self.IMAGE_FIELDS)


# ---------------------------------------------------------------------------------------------
# 3. The same loss, fused and tiled
# ---------------------------------------------------------------------------------------------
#
# Notation: queries Q [N, D] (images), keys K [M, D] (texts), scale s, logits S = s Q K^T.
# Row i's positive is column o + i (o = positive_offset: 0 on one process, rank * N_local for
# the local rows of one process among many, see section 4).
#
#   row term     L_row = 1/N sum_i (lse_i - S[i, o+i]),     lse_i  = log sum_{j<M} exp S[i, j]
#   column term  L_col = 1/N sum_j (lse'_j - S[j, j]),      lse'_j = log sum_{i<N} exp S[i, j],  j < N
#   loss         L = 1/2 (L_row + L_col)   (symmetric=True, CLIP)   or   L = L_row   (one way)
#
# Backward. Softmax cross-entropy CE(z, y) = lse(z) - z_y has d CE / d z = softmax(z) - onehot(y),
# because d lse(z) / d z_j = exp(z_j) / sum_k exp(z_k) = softmax(z)_j. So with
#   P[i, j]  = exp(S[i, j] - lse_i)    (each row sums to 1)
#   P'[i, j] = exp(S[i, j] - lse'_j)   (each of the first N columns sums to 1)
# the gradient of L with respect to the logits is, with w = 1/(2N) (symmetric) or 1/N (one way),
#   G = dL/dS = w (P - Y) + w (P' - Y)[first N columns, symmetric only],  Y[i, o+i] = 1.
# Then S = s Q K^T gives, by the chain rule for a matrix product,
#   dL/dQ = s G K,      dL/dK = s G^T Q,      dL/ds = sum_ij G[i, j] <q_i, k_j> = sum_i <q_i, (G K)_i>.
#
# Memory. Nothing N x M is ever stored: the forward keeps only the per-row lse (N numbers) and
# the per-column lse' (N numbers), built tile by tile; the backward recomputes each tile of S
# from Q and K. A tile is `chunk` rows by all M columns, and two tile buffers live at a time,
# so memory is O((N + M) * D) for the features and their gradients plus O(chunk * M) for the
# tiles, instead of O(N * M) (1 GiB per fp32 copy at N = M = 16384; the reference holds several).
# The price is one extra matrix product (the backward recomputes S): 4 products of N x M x D
# instead of 3.

# Default tile size in logits: 2^23 fp32 = 32 MiB per tile buffer on CPU (at N = 16384, tiles of
# 256 to 2048 rows timed the same within the noise of a shared 2-core machine); 2^26 = 256 MiB
# on GPUs, which want bigger matrix products and fewer kernel launches (a guess: the CUDA path
# is written but has not been run).
TILE_ELEMENTS = {"cpu": 2**23, "cuda": 2**26}


def _rows_per_tile(num_columns, chunk_size, device):
    return chunk_size if chunk_size else max(1, TILE_ELEMENTS.get(device.type, 2**23) // num_columns)


class TiledContrastiveLoss(torch.autograd.Function):
    """The losses above, computed tile by tile; see the derivation in the comments."""

    @staticmethod
    def forward(ctx, queries, keys, logit_scale, positive_offset, symmetric, chunk_size):
        # bf16/fp16 features are promoted once to fp32 (O((N + M) D)); every tile is computed
        # and accumulated in fp32 (float64 stays float64, for gradcheck)
        dtype = torch.promote_types(queries.dtype, torch.float32)
        q, k, s = queries.to(dtype), keys.to(dtype), logit_scale.to(dtype)
        n, m = q.shape[0], k.shape[0]
        if positive_offset + n > m:
            raise ValueError(f"row i's positive is column {positive_offset} + i: {n} rows need at least "
                             f"{positive_offset + n} columns, got {m}")
        chunk = min(_rows_per_tile(m, chunk_size, q.device), n)
        q_scaled = q * s
        logits_tile = q.new_empty(chunk, m)
        exp_tile = q.new_empty(chunk, m)
        row_lse = q.new_empty(n)
        positives = q.new_empty(n)
        column_max = q.new_full((n,), float("-inf"))
        column_sum = q.new_zeros(n)
        for start in range(0, n, chunk):
            rows = min(chunk, n - start)
            logits = torch.mm(q_scaled[start:start + rows], k.t(), out=logits_tile[:rows])
            # lse_i = max_i + log sum_j exp(S[i, j] - max_i): each tile holds whole rows
            row_max = logits.amax(dim=1, keepdim=True)
            shifted = torch.sub(logits, row_max, out=exp_tile[:rows]).exp_()
            row_lse[start:start + rows] = row_max.squeeze(1) + shifted.sum(dim=1).log()
            # the positives S[i, o+i] of these rows: a diagonal of the tile
            positives[start:start + rows] = logits[:, positive_offset + start:positive_offset + start + rows].diagonal()
            if symmetric:
                # lse'_j over rows seen so far, merged online: with m' = max(m, tile max),
                #   sum' = sum * exp(m - m') + sum_{i in tile} exp(S[i, j] - m')
                columns = logits[:, :n]
                new_max = torch.maximum(column_max, columns.amax(dim=0))
                column_sum.mul_((column_max - new_max).exp())
                column_sum += torch.sub(columns, new_max, out=exp_tile[:rows, :n]).exp_().sum(dim=0)
                column_max = new_max
        column_lse = column_max + column_sum.log()
        row_term = (row_lse - positives).mean()
        loss = 0.5 * (row_term + (column_lse - positives).mean()) if symmetric else row_term
        ctx.save_for_backward(queries, keys, logit_scale, row_lse, column_lse)
        ctx.positive_offset, ctx.symmetric, ctx.chunk = positive_offset, symmetric, chunk
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        queries, keys, logit_scale, row_lse, column_lse = ctx.saved_tensors
        offset, symmetric, chunk = ctx.positive_offset, ctx.symmetric, ctx.chunk
        dtype = row_lse.dtype
        q, k, s = queries.to(dtype), keys.to(dtype), logit_scale.to(dtype)
        n, m = q.shape[0], k.shape[0]
        weight = 0.5 / n if symmetric else 1.0 / n
        q_scaled = q * s
        logits_tile = q.new_empty(chunk, m)
        grad_tile = q.new_empty(chunk, m)
        grad_k_unscaled = torch.zeros_like(k)  # G^T Q, times s at the end
        grad_q_unscaled = torch.empty_like(q)  # G K, times s at the end
        # w P = exp(S - lse + log w): fold the weight into the shift, saving a pass over each tile
        row_shift = row_lse - math.log(weight)
        column_shift = column_lse - math.log(weight)
        for start in range(0, n, chunk):
            rows = min(chunk, n - start)
            logits = torch.mm(q_scaled[start:start + rows], k.t(), out=logits_tile[:rows])
            # G = w P ...
            grad = torch.sub(logits, row_shift[start:start + rows, None], out=grad_tile[:rows]).exp_()
            if symmetric:
                # ... + w P' on the first N columns (computed in place: S is not needed again) ...
                grad[:, :n] += logits[:, :n].sub_(column_shift).exp_()
            # ... - w Y (once per term): the positives of these rows, a diagonal of the tile
            grad[:, offset + start:offset + start + rows].diagonal().sub_(2 * weight if symmetric else weight)
            torch.mm(grad, k, out=grad_q_unscaled[start:start + rows])
            grad_k_unscaled.addmm_(grad.t(), q[start:start + rows])
        # dL/ds = sum_i <q_i, (G K)_i>
        grad_scale = (q * grad_q_unscaled).sum()
        grad_q = grad_q_unscaled.mul_(s * grad_loss)
        grad_k = grad_k_unscaled.mul_(s * grad_loss)
        grad_scale = (grad_scale * grad_loss).to(logit_scale.dtype).reshape(logit_scale.shape)
        return grad_q.to(queries.dtype), grad_k.to(keys.dtype), grad_scale, None, None, None


IMPLEMENTATIONS = ("auto", "triton", "triton-bf16", "tiled", "reference")
AUTO_TRITON_DEVICES = ("cuda",)  # where impl="auto" measures the Triton kernel against the tiled op


def check_impl(impl):
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be one of {', '.join(IMPLEMENTATIONS)}, not {impl!r}")


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None  # loss_triton needs the triton package


def _contrastive(queries, keys, logit_scale, positive_offset, symmetric, chunk_size, impl):
    """Dispatch one contrastive loss to an implementation; all give the same numbers.

    auto: on CUDA with triton installed, the faster of the Triton kernel and the tiled op, measured
    correct on the first call of each kind (loss_triton.auto_impl); the tiled op everywhere else.
    triton-bf16: the kernel with fp32 features rounded to bf16 on chip (tensor cores)."""
    check_impl(impl)
    scale = logit_scale if torch.is_tensor(logit_scale) else torch.tensor(logit_scale, device=queries.device)
    if impl == "auto":
        impl = "tiled"
        if queries.device.type in AUTO_TRITON_DEVICES and triton_available():
            from loss_triton import auto_impl
            impl = auto_impl(queries, keys, scale, positive_offset, symmetric, chunk_size)
    if impl == "reference":
        if symmetric:
            return contrastive_loss_reference(queries, keys, scale)
        return one_way_contrastive_loss_reference(queries, keys, scale, positive_offset)
    if impl in ("triton", "triton-bf16"):
        from loss_triton import TritonContrastiveLoss
        return TritonContrastiveLoss.apply(queries, keys, scale, positive_offset, symmetric, impl == "triton-bf16")
    return TiledContrastiveLoss.apply(queries, keys, scale, positive_offset, symmetric, chunk_size)


def contrastive_loss(image_features, text_features, logit_scale, chunk_size=None, impl="auto"):
    """CLIP's symmetric InfoNCE, fused: same signature and value as contrastive_loss_reference.

    image_features [N, D], text_features [M, D], M >= N; row i's positive is column i; columns
    N..M-1 are extra image->text negatives. Memory O((N + M) * chunk_size) instead of O(N * M);
    chunk_size=None picks `TILE_ELEMENTS[device] // M` rows per tile. Returns an fp32 scalar (float64 for
    float64 input) whatever the feature dtype; gradients come back in the features' dtypes.
    impl: "auto" (CUDA: the faster correct one of triton and tiled, measured; tiled elsewhere), "triton",
    "triton-bf16" (fp32 features as bf16 tiles), "tiled" or "reference".
    """
    return _contrastive(image_features, text_features, logit_scale, 0, True, chunk_size, impl)


def one_way_contrastive_loss(queries, keys, logit_scale, positive_offset=0, chunk_size=None, impl="auto"):
    """Mean over rows i of cross_entropy(s * q_i K^T, target positive_offset + i), fused.

    One direction of CLIP's loss: queries [N, D] against keys [M, D], M >= positive_offset + N.
    The building block of the multi-process loss below.
    """
    return _contrastive(queries, keys, logit_scale, positive_offset, False, chunk_size, impl)


# ---------------------------------------------------------------------------------------------
# 4. Many processes: every process computes its own rows against the global batch
# ---------------------------------------------------------------------------------------------
#
# With W processes of n samples each, process r holds images I_r, texts T_r (and negations).
# It gathers everything, I = [I_0..I_W-1], T = [T_0..T_W-1], and computes only its own rows
# ("local loss", as open_clip's local_loss=True):
#   L_r = 1/2 (CE rows of I_r against [T, T-]  +  CE rows of T_r against I),  positives at r*n + i
# The mean of L_r over processes is exactly the single-process loss on the global batch of W*n.
# Gradients flow back through the gather (its backward sums each process's contributions into
# the owner's slice), and DDP's averaging of parameter gradients then yields d(mean_r L_r).


def _rank_and_world_size():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(features):
    """All processes' features concatenated in rank order, with gradient; unchanged on one process.

    All processes must pass the same shape.
    """
    if _rank_and_world_size()[1] == 1:
        return features
    from torch.distributed.nn.functional import all_gather  # differentiable, unlike dist.all_gather
    return torch.cat(all_gather(features), dim=0)


def distributed_contrastive_loss(image_local, text_local, logit_scale, negation_local=None, chunk_size=None,
                                 impl="auto"):
    """This process's share of CLIP's loss over the global batch (every process: same n).

    Average it over processes (DDP does, by averaging gradients) to get contrastive_loss on the
    gathered batch, with the gathered negations as extra image->text negatives if given. On one
    process it is exactly contrastive_loss(image, cat([text, negation])).
    """
    rank, world_size = _rank_and_world_size()
    columns = [text_local] if negation_local is None else [text_local, negation_local]
    if world_size == 1:
        return contrastive_loss(image_local, torch.cat(columns), logit_scale, chunk_size, impl)
    keys = torch.cat([gather_features(c) for c in columns])
    offset = rank * image_local.shape[0]
    image_to_text = one_way_contrastive_loss(image_local, keys, logit_scale, offset, chunk_size, impl)
    text_to_image = one_way_contrastive_loss(text_local, gather_features(image_local), logit_scale, offset,
                                             chunk_size, impl)
    return 0.5 * (image_to_text + text_to_image)


# ---------------------------------------------------------------------------------------------
# 5. SigLIP's sigmoid loss (Zhai et al., "Sigmoid Loss for Language Image Pre-Training", 2023)
# ---------------------------------------------------------------------------------------------


def sigmoid_loss(image_features, text_features, logit_scale, logit_bias, positive_offset=0):
    """Every (image, text) pair is its own binary classification: matching or not.

    Plain ops (materialises N x M). Extra columns are extra negatives; positive_offset as above.
    """
    n = image_features.shape[0]
    logits = logit_scale * image_features @ text_features.t() + logit_bias
    # z[i, j] = +1 for the positive pair (j = o + i), -1 otherwise
    signs = -torch.ones_like(logits)
    signs[:, positive_offset:positive_offset + n].diagonal().fill_(1.0)
    # L_sig = -1/N sum_i sum_j log sigmoid(z[i, j] * (s <x_i, y_j> + b))
    return -F.logsigmoid(signs * logits).sum() / n


# ---------------------------------------------------------------------------------------------
# 6. CoN-CLIP (Singh et al., "Learn 'No' to Say 'Yes' Better", WACV 2025)
# ---------------------------------------------------------------------------------------------
#
# Each sample i has an image I_i, its caption T_i, its negated caption T-_i and a distractor image
# D_i: an image that the negated caption describes. Their code (training_utils/loss_functions.py,
# CustomLossWithNegatives; data/finetuning_datasets.py) takes D_i from a separate pool, MS-COCO
# train2017, as the first of the precomputed neighbours in ccneg_dataset/distractor_image_mapping.pt;
# a triplets file gives it as a `distractor` image per line (data.py).


def conclip_loss(image, text, negation, distractor, logit_scale, impl="auto"):
    """CoN-CLIP's loss on L2-normalised [n, D] embeddings: this process's share, as
    distributed_contrastive_loss (on one process, the whole loss).

    Each term is a cross-entropy whose target for row i is column i of its keys.
    """
    offset = _rank_and_world_size()[0] * image.shape[0]
    captions = [gather_features(text), gather_features(negation)]
    images = torch.cat([gather_features(image), gather_features(distractor)])
    # L1 = CE(s I [T; T-]^T): an image prefers its caption to every caption and negated caption
    l_image = one_way_contrastive_loss(image, torch.cat(captions), logit_scale, offset, impl=impl)
    # L2 = CE(s T [I; D]^T): a caption prefers its image to every image and distractor image
    l_text = one_way_contrastive_loss(text, images, logit_scale, offset, impl=impl)
    # L3 = CE(s D [T-; T]^T): distractor i prefers negated caption i, which describes it
    l_distractor = one_way_contrastive_loss(distractor, torch.cat(captions[::-1]), logit_scale, offset, impl=impl)
    # L_conclip = (L1 + L2 + L3) / 3
    return (l_image + l_text + l_distractor) / 3
