"""loss.py: the fused contrastive op against plain references, the SemCLIP terms against the
paper's equations (computed here independently), and the multi-process local loss."""

import os
import socket
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import loss  # noqa: E402
from loss import (  # noqa: E402
    LOSS_VARIANTS,
    SemCLIPLoss,
    contrastive_loss,
    contrastive_loss_reference,
    distributed_contrastive_loss,
    one_way_contrastive_loss,
    sigmoid_loss,
)


def unit(n, d, seed, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1).to(dtype)


def loss_and_grads(fn, image, text, scale, *args):
    image = image.clone().requires_grad_()
    text = text.clone().requires_grad_()
    scale = torch.tensor(scale, dtype=image.dtype, requires_grad=True)
    value = fn(image, text, scale, *args)
    value.backward()
    return value.detach(), image.grad, text.grad, scale.grad


def assert_close_rel(actual, expected, rtol=1e-5):
    for a, e in zip(actual, expected):
        assert a.dtype == e.dtype and a.shape == e.shape
        scale = e.abs().max().clamp_min(1e-12)
        assert (a - e).abs().max() <= rtol * scale, (a, e)


# --- the reference is CLIP's loss ------------------------------------------------------------


def test_reference_is_the_clip_equation():
    image, text, s = unit(5, 4, 0, torch.float64), unit(7, 4, 1, torch.float64), 3.0
    logits = s * image @ text.t()
    image_to_text = sum(torch.logsumexp(logits[i], 0) - logits[i, i] for i in range(5)) / 5
    text_to_image = sum(torch.logsumexp(logits[:5, j], 0) - logits[j, j] for j in range(5)) / 5
    expected = 0.5 * (image_to_text + text_to_image)
    torch.testing.assert_close(contrastive_loss_reference(image, text, s), expected)


# --- the fused op equals the reference -------------------------------------------------------

CASES = [  # (N, M, chunk_size)
    (8, 8, None),   # one tile
    (8, 8, 4),      # chunk divides N
    (8, 8, 3),      # chunk does not divide N
    (8, 13, 3),     # extra columns (negations)
    (8, 16, 5),
    (1, 1, None),   # a batch of one
    (1, 4, 1),
    (33, 40, 7),
]


@pytest.mark.parametrize("n,m,chunk", CASES)
def test_fused_equals_reference_fp32(n, m, chunk):
    image, text = unit(n, 16, 0), unit(m, 16, 1)
    fused = loss_and_grads(contrastive_loss, image, text, 14.0, chunk)
    reference = loss_and_grads(contrastive_loss_reference, image, text, 14.0)
    assert_close_rel(fused, reference, rtol=1e-5)


@pytest.mark.parametrize("n,m,chunk", [(6, 6, 4), (6, 9, 4), (1, 3, 1), (5, 5, None)])
def test_fused_gradcheck_float64(n, m, chunk):
    image = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    text = torch.randn(m, 4, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y, s: contrastive_loss(x, y, s, chunk), (image, text, scale))


def test_one_way_gradcheck_float64_with_offset():
    queries = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, s: one_way_contrastive_loss(q, k, s, 6, 2), (queries, keys, scale))


def test_duplicate_features():
    image = unit(4, 8, 0).repeat(3, 1)  # every image three times
    text = unit(4, 8, 1).repeat(3, 1)
    fused = loss_and_grads(contrastive_loss, image, text, 10.0, 5)
    reference = loss_and_grads(contrastive_loss_reference, image, text, 10.0)
    assert_close_rel(fused, reference)


def test_large_logit_scale_does_not_overflow():
    image, text = unit(16, 8, 0), unit(24, 8, 1)
    image[3] = text[5]  # a perfect match off the diagonal: logits up to 100
    fused = loss_and_grads(contrastive_loss, image, text, 100.0, 5)
    reference = loss_and_grads(contrastive_loss_reference, image, text, 100.0)
    assert all(torch.isfinite(t).all() for t in fused)
    assert_close_rel(fused, reference)


def test_python_float_scale_and_no_grad_inputs():
    image, text = unit(6, 8, 0), unit(6, 8, 1)
    torch.testing.assert_close(contrastive_loss(image, text, 7.0), contrastive_loss_reference(image, text, 7.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_accumulates_in_fp32(dtype):
    image, text = unit(32, 16, 0).to(dtype), unit(40, 16, 1).to(dtype)
    value, grad_image, grad_text, grad_scale = loss_and_grads(contrastive_loss, image, text, 50.0, 7)
    assert value.dtype == torch.float32 and grad_image.dtype == dtype and grad_text.dtype == dtype
    # the same numbers as fp32 on the (already rounded) features
    expected = loss_and_grads(contrastive_loss_reference, image.float(), text.float(), 50.0)
    torch.testing.assert_close(value, expected[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(grad_image.float(), expected[1], rtol=1e-2, atol=1e-4)
    torch.testing.assert_close(grad_text.float(), expected[2], rtol=1e-2, atol=1e-4)


def test_one_way_is_cross_entropy_with_offset_targets():
    queries, keys = unit(5, 8, 0), unit(20, 8, 1)
    expected = F.cross_entropy(4.0 * queries @ keys.t(), torch.arange(5) + 10)
    torch.testing.assert_close(one_way_contrastive_loss(queries, keys, 4.0, positive_offset=10, chunk_size=2), expected)


def test_fewer_columns_than_rows_is_an_error():
    with pytest.raises(ValueError, match="columns"):
        contrastive_loss(unit(5, 4, 0), unit(4, 4, 1), 1.0)
    with pytest.raises(ValueError, match="columns"):
        one_way_contrastive_loss(unit(3, 4, 0), unit(8, 4, 1), 1.0, positive_offset=6)


# --- many processes: local rows against the gathered batch -----------------------------------


def test_simulated_ranks_local_losses_average_to_the_global_loss():
    world, n = 2, 6
    image, text, negation = unit(world * n, 8, 0), unit(world * n, 8, 1), unit(world * n, 8, 2)
    scale = 9.0

    def with_negations(x, y, s):
        return contrastive_loss_reference(x, torch.cat([y, negation]), s)

    full = loss_and_grads(with_negations, image, text, scale)

    # every "rank" sees the gathered tensors (the same leaves, so gradients add up as the
    # gather's backward adds them) and computes only its own rows
    image_all = image.clone().requires_grad_()
    text_all = text.clone().requires_grad_()
    s = torch.tensor(scale, requires_grad=True)
    local_losses = []
    for rank in range(world):
        rows = slice(rank * n, (rank + 1) * n)
        keys = torch.cat([text_all, negation])
        local_losses.append(0.5 * (one_way_contrastive_loss(image_all[rows], keys, s, rank * n, 4)
                                   + one_way_contrastive_loss(text_all[rows], image_all, s, rank * n, 4)))
    mean_loss = sum(local_losses) / world
    mean_loss.backward()
    assert_close_rel((mean_loss.detach(), image_all.grad, text_all.grad, s.grad), full)


def test_distributed_on_one_process_is_contrastive_loss_with_negations():
    image, text, negation = unit(6, 8, 0), unit(6, 8, 1), unit(6, 8, 2)
    torch.testing.assert_close(distributed_contrastive_loss(image, text, 5.0, negation),
                               contrastive_loss_reference(image, torch.cat([text, negation]), 5.0))
    assert loss.gather_features(image) is image


def _distributed_worker(rank, world, port, result_path):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    n = 4
    image, text, negation = unit(world * n, 8, 0), unit(world * n, 8, 1), unit(world * n, 8, 2)
    rows = slice(rank * n, (rank + 1) * n)
    image_local = image[rows].clone().requires_grad_()
    text_local = text[rows].clone().requires_grad_()
    scale = torch.tensor(6.0, requires_grad=True)
    local = distributed_contrastive_loss(image_local, text_local, scale, negation[rows], chunk_size=3)
    local.backward()
    torch.save({"loss": local.detach(), "image_grad": image_local.grad, "text_grad": text_local.grad,
                "scale_grad": scale.grad}, f"{result_path}.{rank}")
    dist.barrier()  # no process tears gloo down while its peer still talks to it
    dist.destroy_process_group()


def test_two_processes_gloo(tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world, n = 2, 4
    mp.spawn(_distributed_worker, args=(world, port, str(tmp_path / "r")), nprocs=world)
    results = [torch.load(tmp_path / f"r.{rank}") for rank in range(world)]

    image, text, negation = unit(world * n, 8, 0), unit(world * n, 8, 1), unit(world * n, 8, 2)
    full = loss_and_grads(lambda x, y, s: contrastive_loss_reference(x, torch.cat([y, negation]), s), image, text, 6.0)
    # DDP averages gradients over processes: the mean of the local losses is the global loss
    torch.testing.assert_close(sum(r["loss"] for r in results) / world, full[0])
    torch.testing.assert_close(torch.cat([r["image_grad"] for r in results]) / world, full[1])
    torch.testing.assert_close(torch.cat([r["text_grad"] for r in results]) / world, full[2])
    torch.testing.assert_close(sum(r["scale_grad"] for r in results) / world, full[3])


# --- SigLIP ----------------------------------------------------------------------------------


def test_sigmoid_loss_is_the_siglip_equation():
    image, text, s, b = unit(3, 4, 0, torch.float64), unit(5, 4, 1, torch.float64), 10.0, -2.0
    expected = 0.0
    for i in range(3):
        for j in range(5):
            z = 1.0 if j == i + 1 else -1.0
            expected -= torch.log(torch.sigmoid(z * (s * image[i] @ text[j] + b)))
    torch.testing.assert_close(sigmoid_loss(image, text, s, b, positive_offset=1), expected / 3)


# --- SemCLIPLoss equals the paper's equations -----------------------------------------------


def semclip_by_hand(basis, image, text, paraphrase, negation, scale, weights, contrastive_columns,
                    normalize=True, contrastive_fn=None):
    def p(x):
        y = x @ basis.t()
        return F.normalize(y, dim=-1) if normalize else y
    contrastive = (contrastive_fn or contrastive_loss_reference)(image, contrastive_columns, scale)
    paraphrase_term = (1 - (p(text) * p(paraphrase)).sum(-1)).mean()
    negation_term = torch.clamp((p(text) * p(negation)).sum(-1), min=0).mean()
    a, b, c = weights
    total = (a * contrastive + b * paraphrase_term + c * negation_term) / (a + b + c)
    return contrastive, paraphrase_term, negation_term, total


@pytest.fixture
def triplet():
    n, d = 10, 16
    return unit(n, d, 0), unit(n, d, 1), unit(n, d, 2), unit(n, d, 3), torch.tensor(12.0)


def check_against_hand(module, triplet, weights, negatives_in_contrastive=False, normalize=True, contrastive_fn=None):
    image, text, paraphrase, negation, scale = triplet
    out = module(image, text, paraphrase, negation, scale)
    columns = torch.cat([text, negation]) if negatives_in_contrastive else text
    expected = semclip_by_hand(module.basis.detach(), image, text, paraphrase, negation, scale, weights,
                               columns, normalize, contrastive_fn)
    for name, value in zip(["contrastive", "paraphrase", "negation", "loss"], expected):
        torch.testing.assert_close(out[name].detach(), value.detach(), msg=name)
    return out


def test_basis_is_orthonormal_and_fixed_by_the_seed():
    a, b, c = SemCLIPLoss(32, seed=0), SemCLIPLoss(32, seed=0), SemCLIPLoss(32, num_projections=3, seed=1)
    assert a.basis.shape == (2, 32) and c.basis.shape == (3, 32)
    torch.testing.assert_close(a.basis @ a.basis.t(), torch.eye(2))
    torch.testing.assert_close(c.basis @ c.basis.t(), torch.eye(3))
    assert torch.equal(a.basis, b.basis) and not a.basis.requires_grad
    assert "basis" in a.state_dict()


def test_semclip_default_equals_equations(triplet):
    check_against_hand(SemCLIPLoss(16), triplet, (1.0, 1.0, 1.0))


def test_semclip_custom_weights_and_projections(triplet):
    module = SemCLIPLoss(16, contrastive_weight=2.0, paraphrase_weight=0.5, negation_weight=3.0,
                         num_projections=4, seed=7)
    check_against_hand(module, triplet, (2.0, 0.5, 3.0))


def test_unnormalized_projections_use_raw_inner_products(triplet):
    check_against_hand(SemCLIPLoss(16, normalize_projections=False), triplet, (1.0, 1.0, 1.0), normalize=False)


def test_plain_clip_equals_the_reference_and_weight_0_terms_are_only_reported(triplet):
    image, text, paraphrase, negation, scale = [t.clone().requires_grad_() for t in triplet]
    module = SemCLIPLoss(16, **LOSS_VARIANTS["clip"])
    out = check_against_hand(module, (image, text, paraphrase, negation, scale), (1.0, 0.0, 0.0))
    torch.testing.assert_close(out["loss"], contrastive_loss_reference(image, text, scale))
    out["loss"].backward()
    assert image.grad is not None and paraphrase.grad is None and negation.grad is None
    assert module.texts == ()


@pytest.mark.parametrize("variant, texts", [("semclip", ("paraphrase", "negation")), ("clip", ()),
                                            ("negclip", ("negation",)), ("siglip", ("paraphrase", "negation")),
                                            ("semclip_hn", ("paraphrase", "negation")), ("conclip", ("negation",)),
                                            ("semclip_tn", ("paraphrase", "negation", "true_negation"))])
def test_each_variant_declares_the_texts_it_trains_on(variant, texts):
    assert SemCLIPLoss(16, **LOSS_VARIANTS[variant]).texts == texts
    assert SemCLIPLoss(16, **LOSS_VARIANTS[variant]).images == (("distractor",) if variant == "conclip" else ())
    without_paraphrase = {**LOSS_VARIANTS[variant], "paraphrase_weight": 0.0}
    assert SemCLIPLoss(16, **without_paraphrase).texts == tuple(t for t in texts if t != "paraphrase")


def test_negclip_adds_negations_to_the_contrastive_term(triplet):
    module = SemCLIPLoss(16, **LOSS_VARIANTS["negclip"])
    check_against_hand(module, triplet, (1.0, 0.0, 0.0), negatives_in_contrastive=True)


def test_semclip_with_negatives_in_contrastive(triplet):
    check_against_hand(SemCLIPLoss(16, negatives_in_contrastive=True), triplet, (1.0, 1.0, 1.0),
                       negatives_in_contrastive=True)
    check_against_hand(SemCLIPLoss(16, **LOSS_VARIANTS["semclip_hn"]), triplet, (1.0, 1.0, 1.0),
                       negatives_in_contrastive=True)


def test_truth_term_is_a_two_way_choice_of_the_true_negation_over_the_false_one(triplet):
    image, text, paraphrase, negation, scale = triplet
    true_negation = unit(10, 16, 4)
    module = SemCLIPLoss(16, **LOSS_VARIANTS["semclip_tn"])
    out = module(image, text, paraphrase, negation, scale, true_negation=true_negation)
    # cross-entropy over the two choices [t°, t-], answer 0, from F.cross_entropy in float64
    choices = torch.stack([(image * true_negation).sum(-1), (image * negation).sum(-1)], dim=1).double()
    expected = F.cross_entropy(scale * choices, torch.zeros(10, dtype=torch.long))
    torch.testing.assert_close(out["truth"].double(), expected)
    hand = semclip_by_hand(module.basis, image, text, paraphrase, negation, scale, (1.0, 1.0, 1.0),
                           torch.cat([text, negation]))
    torch.testing.assert_close(out["loss"], (3 * hand[-1] + out["truth"]) / 4)
    # a true negation that is closer to the image than the false one costs less
    assert module(image, text, paraphrase, negation, scale, true_negation=image)["truth"] < out["truth"]
    with pytest.raises(ValueError, match="true_negation"):
        module(image, text, paraphrase, negation, scale)
    # at weight 0 the term does not exist: the paper's variants neither need nor log t°
    assert "truth" not in SemCLIPLoss(16)(image, text, paraphrase, negation, scale, true_negation=true_negation)
    assert SemCLIPLoss(16).logged_texts == ("paraphrase", "negation") and "true_negation" in module.logged_texts


def test_siglip_variant(triplet):
    module = SemCLIPLoss(16, **LOSS_VARIANTS["siglip"])
    assert module.logit_bias.item() == -10.0
    check_against_hand(module, triplet, (1.0, 1.0, 1.0),
                       contrastive_fn=lambda x, y, s: sigmoid_loss(x, y, s, torch.tensor(-10.0)))


def test_learnable_projections_stay_orthonormal(triplet):
    module = SemCLIPLoss(16, learnable_projections=True)
    torch.testing.assert_close(module.basis, SemCLIPLoss(16).basis)
    check_against_hand(module, triplet, (1.0, 1.0, 1.0))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        module(*triplet)["loss"].backward()
        optimizer.step()
    basis = module.basis.detach()
    assert not torch.allclose(basis, SemCLIPLoss(16).basis)
    torch.testing.assert_close(basis @ basis.t(), torch.eye(2), atol=1e-5, rtol=0)


def test_gradients_reach_every_input(triplet):
    image, text, paraphrase, negation, _ = [t.clone().requires_grad_() for t in triplet]
    scale = torch.tensor(12.0, requires_grad=True)
    SemCLIPLoss(16)(image, text, paraphrase, negation, scale)["loss"].backward()
    for t in (image, text, paraphrase, scale):
        assert t.grad is not None and torch.isfinite(t.grad).all()


def test_missing_embeddings_need_zero_weight(triplet):
    image, text, _, negation, scale = triplet
    out = SemCLIPLoss(16, **LOSS_VARIANTS["clip"])(image, text, None, None, scale)
    assert out["paraphrase"].isnan() and out["negation"].isnan()
    torch.testing.assert_close(out["loss"], contrastive_loss_reference(image, text, scale))
    out = SemCLIPLoss(16, **LOSS_VARIANTS["negclip"])(image, text, None, negation, scale)
    torch.testing.assert_close(out["loss"], contrastive_loss_reference(image, torch.cat([text, negation]), scale))
    with pytest.raises(ValueError, match="paraphrase"):
        SemCLIPLoss(16)(image, text, None, negation, scale)
    with pytest.raises(ValueError, match="contrastive"):
        SemCLIPLoss(16, **LOSS_VARIANTS["negclip"])(image, text, None, None, scale)


def test_bad_arguments():
    with pytest.raises(ValueError):
        SemCLIPLoss(8, contrastive_weight=0, paraphrase_weight=0, negation_weight=0)
    with pytest.raises(ValueError):
        SemCLIPLoss(8, contrastive="hinge")
    with pytest.raises(ValueError, match="impl"):
        SemCLIPLoss(8, contrastive_impl="cuda")
    with pytest.raises(ValueError, match="impl"):
        contrastive_loss(unit(2, 4, 0), unit(2, 4, 1), 1.0, impl="fast")


@pytest.mark.parametrize("n,m", [(6, 6), (6, 9)])
def test_every_impl_gives_the_reference_and_auto_on_cpu_is_the_tiled_op(n, m, monkeypatch):
    image, text, s = unit(n, 8, 0), unit(m, 8, 1), torch.tensor(7.0)
    expected = contrastive_loss_reference(image, text, s)
    for impl in ("reference", "tiled", "auto"):
        torch.testing.assert_close(contrastive_loss(image, text, s, impl=impl), expected, rtol=1e-5, atol=1e-6)
    rows = image[: m - n + 1]  # positives at columns (m - n) + i, the last possible offset
    for impl in ("reference", "tiled"):
        torch.testing.assert_close(loss.one_way_contrastive_loss(rows, text, s, n - 1, impl=impl),
                                   F.cross_entropy(s * rows @ text.t(), torch.arange(n - 1, m)))
    calls = []
    monkeypatch.setattr(loss.TiledContrastiveLoss, "apply", lambda *a: calls.append(a) or expected)
    contrastive_loss(image, text, s)
    assert len(calls) == 1


# --- training with the fused op matches training with the reference --------------------------


def train_tiny(contrastive_fn, steps=20):
    torch.manual_seed(0)
    image_encoder, text_encoder = torch.nn.Linear(12, 8), torch.nn.Linear(12, 8)
    log_scale = torch.nn.Parameter(torch.tensor(2.0))
    params = [*image_encoder.parameters(), *text_encoder.parameters(), log_scale]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    images, captions = torch.randn(64, 12), torch.randn(64, 12)
    losses = []
    for step in range(steps):
        batch = slice(step % 4 * 16, step % 4 * 16 + 16)
        x = F.normalize(image_encoder(images[batch]), dim=-1)
        y = F.normalize(text_encoder(captions[batch]), dim=-1)
        value = contrastive_fn(x, y, log_scale.exp().clamp(max=100), 5)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        losses.append(value.item())
    return losses, [p.detach() for p in params]


def test_training_with_fused_matches_reference():
    fused_losses, fused_params = train_tiny(contrastive_loss)
    reference_losses, reference_params = train_tiny(contrastive_loss_reference)
    assert fused_losses[-1] < fused_losses[0]
    torch.testing.assert_close(torch.tensor(fused_losses), torch.tensor(reference_losses), rtol=1e-5, atol=1e-6)
    for a, b in zip(fused_params, reference_params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_paraphrase_term_in_its_own_subspace_and_on_the_full_embedding(triplet):
    image, text, paraphrase, negation, scale = triplet
    paper, own = SemCLIPLoss(16, seed=3), SemCLIPLoss(16, num_paraphrase_projections=16, seed=3)
    out, out_own = paper(image, text, paraphrase, negation, scale), own(image, text, paraphrase, negation, scale)
    # K_para = D: B_para is a rotation, so L_para = mean(1 - cos(t, t+)) on the full embedding
    torch.testing.assert_close(out_own["paraphrase"], (1 - (text * paraphrase).sum(-1)).mean())
    # the negation term keeps the paper's K = 2 basis, the same for the same seed
    torch.testing.assert_close(out_own["negation"], out["negation"])
    assert own.paraphrase_basis.shape == (16, 16) and paper.paraphrase_basis is None
    assert "paraphrase_basis" not in paper.state_dict()  # checkpoints of the paper's loss are unchanged
    e = torch.eye(4)
    planted = SemCLIPLoss(4, num_paraphrase_projections=4)(e[:1], e[:1], e[1:2], e[:1], torch.tensor(1.0))
    assert planted["paraphrase"].item() == pytest.approx(1.0)  # orthogonal paraphrase: 1 - 0
    with pytest.raises(ValueError, match="at most the embedding's 16 dimensions"):
        SemCLIPLoss(16, num_paraphrase_projections=17)


# --- CoN-CLIP's loss equals their code's equations ------------------------------------------


def conclip_by_hand(image, text, negation, distractor, scale):
    """CoN-CLIP's CustomLossWithNegatives as their code computes it: images [I; D], texts [T; T-]."""
    n = image.shape[0]
    image_features, text_features = torch.cat([image, distractor]), torch.cat([text, negation])
    labels = torch.arange(n)
    logits_image = scale * image_features[:n] @ text_features.T
    logits_text = scale * text_features[:n] @ image_features.T
    logits_distractor = scale * image_features[n:] @ torch.cat([text_features[n:], text_features[:n]]).T
    return (F.cross_entropy(logits_image, labels) + F.cross_entropy(logits_text, labels)
            + F.cross_entropy(logits_distractor, labels)) / 3


@pytest.mark.parametrize("impl", ["tiled", "reference"])
def test_conclip_equals_their_equations_with_gradients(impl):
    inputs = [unit(10, 16, seed).requires_grad_() for seed in range(4)]  # image, text, negation, distractor
    scale = torch.tensor(12.0, requires_grad=True)
    expected = conclip_by_hand(*inputs, scale)
    expected_grads = torch.autograd.grad(expected, [*inputs, scale])
    module = SemCLIPLoss(16, contrastive_impl=impl, **LOSS_VARIANTS["conclip"])
    image, text, negation, distractor = inputs
    out = module(image, text, None, negation, scale, distractor=distractor)
    torch.testing.assert_close(out["contrastive"], expected)
    torch.testing.assert_close(out["loss"], expected)
    assert out["paraphrase"].isnan()  # no paraphrases given: reported as not measured
    for actual, wanted in zip(torch.autograd.grad(out["loss"], [*inputs, scale]), expected_grads):
        torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-6)


def test_conclip_needs_distractors_and_simulated_ranks_average_to_the_whole_loss(monkeypatch):
    image, text, negation, distractor = (unit(4, 8, seed) for seed in range(4))
    with pytest.raises(ValueError, match="distractor"):
        SemCLIPLoss(8, **LOSS_VARIANTS["conclip"])(image, text, None, negation, torch.tensor(5.0))
    world, n = 2, 5
    inputs = [unit(world * n, 8, seed) for seed in range(4)]
    expected = conclip_by_hand(*inputs, 7.0)
    local_losses = []
    for rank in range(world):
        local = [t[rank * n:(rank + 1) * n] for t in inputs]
        gathered = {id(part): whole for part, whole in zip(local, inputs)}
        monkeypatch.setattr(loss, "_rank_and_world_size", lambda: (rank, world))
        monkeypatch.setattr(loss, "gather_features", lambda part: gathered[id(part)])
        local_losses.append(loss.conclip_loss(*local, torch.tensor(7.0)))
    torch.testing.assert_close(sum(local_losses) / world, expected)

