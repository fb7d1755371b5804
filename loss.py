"""SemCLIP losses: CLIP's contrastive loss plus paraphrase and negation terms.

First version: `contrastive_loss` calls the plain reference; the fused, tiled op follows.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def contrastive_loss_reference(image_features, text_features, logit_scale, chunk_size=None):
    """CLIP's symmetric InfoNCE with plain F.cross_entropy (materialises N x M logits).

    image_features [N, D], text_features [M, D] with M >= N; row i's positive is column i.
    Columns N..M-1 are extra negatives for image->text only. chunk_size is ignored.
    """
    n = image_features.shape[0]
    logits = logit_scale * image_features @ text_features.t()  # [N, M]
    labels = torch.arange(n, device=logits.device)
    image_to_text = F.cross_entropy(logits, labels)
    text_to_image = F.cross_entropy(logits[:, :n].t(), labels)
    return 0.5 * (image_to_text + text_to_image)


def contrastive_loss(image_features, text_features, logit_scale, chunk_size=None):
    return contrastive_loss_reference(image_features, text_features, logit_scale, chunk_size)


class SemCLIPLoss(nn.Module):
    def __init__(self, embed_dim, contrastive_weight=1.0, paraphrase_weight=1.0, negation_weight=1.0,
                 num_projections=2, learnable_projections=False, normalize_projections=True,
                 negatives_in_contrastive=False, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        gaussian = torch.randn(embed_dim, num_projections, generator=generator)
        basis = torch.linalg.qr(gaussian).Q.t().contiguous()  # [K, D], orthonormal rows
        if learnable_projections:
            self.basis = nn.Parameter(basis)
        else:
            self.register_buffer("basis", basis)
        self.learnable_projections = learnable_projections
        self.contrastive_weight = contrastive_weight
        self.paraphrase_weight = paraphrase_weight
        self.negation_weight = negation_weight
        self.normalize_projections = normalize_projections
        self.negatives_in_contrastive = negatives_in_contrastive

    def project(self, x):
        basis = self.basis
        if self.learnable_projections:
            basis = torch.linalg.qr(basis.t()).Q.t()
        p = x @ basis.t()
        return F.normalize(p, dim=-1) if self.normalize_projections else p

    def forward(self, image, text, paraphrase, negation, logit_scale):
        zero = image.new_zeros(())
        columns = torch.cat([text, negation]) if self.negatives_in_contrastive else text
        contrastive = contrastive_loss(image, columns, logit_scale) if self.contrastive_weight else zero
        p_text = self.project(text)
        paraphrase_term = (1 - F.cosine_similarity(p_text, self.project(paraphrase), dim=-1)).mean() \
            if self.paraphrase_weight else zero
        negation_term = F.relu(F.cosine_similarity(p_text, self.project(negation), dim=-1)).mean() \
            if self.negation_weight else zero
        total_weight = self.contrastive_weight + self.paraphrase_weight + self.negation_weight
        loss = (self.contrastive_weight * contrastive + self.paraphrase_weight * paraphrase_term
                + self.negation_weight * negation_term) / total_weight
        return {"loss": loss, "contrastive": contrastive, "paraphrase": paraphrase_term, "negation": negation_term}
