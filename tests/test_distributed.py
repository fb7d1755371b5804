"""Many processes (gloo, CPU): 2 processes x b train exactly like 1 process x 2b.

Tolerance: the gathered loss sums the same terms in a different order, so loss and gradients
agree to float32 rounding (rtol 1e-4, atol 1e-5 on gradients of magnitude up to ~5); weights
after a few AdamW steps to 1e-4.
"""

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distributed import average_gradients
from model import CLIP, ModelConfig
from train import build_loss, parse_args, train_step, trainable_parameters

from conftest import ROOT

CONFIG = ModelConfig(image_size=16, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2, text_width=32,
                     text_layers=1, text_heads=2, context_length=8, vocab_size=300, eot_token=299, embed_dim=16)
LOSS_ARGS = parse_args(["--learnable-projections"])


def global_batch(n):
    """Images and three texts per sample; row i of every tensor is sample i."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, CONFIG.image_size, CONFIG.image_size, generator=generator)
    texts = torch.randint(1, CONFIG.vocab_size - 1, (3, n, CONFIG.context_length), generator=generator)
    texts[:, :, -1] = CONFIG.eot_token  # where the encoder pools
    return images, *texts


def loss_and_gradients(rows, accum_steps, world_size):
    """This process's rows of the global batch through train.train_step; (loss, {name: grad}) averaged
    over processes as train.py does."""
    torch.manual_seed(0)
    model, loss_fn = CLIP(CONFIG), build_loss(LOSS_ARGS, CONFIG.embed_dim)
    batch = [t[rows] for t in global_batch(8)]
    terms = train_step(model, model.logit_scale, loss_fn, batch, accum_steps)
    loss = terms["loss"].detach().clone()
    average_gradients(trainable_parameters(model, loss_fn), world_size)
    if world_size > 1:
        dist.all_reduce(loss.div_(world_size))
    named = list(model.named_parameters()) + [("loss." + n, p) for n, p in loss_fn.named_parameters()]
    return loss, {name: p.grad for name, p in named}


def worker(rank, world_size, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    block = 8 // world_size
    results = {k: loss_and_gradients(slice(rank * block, (rank + 1) * block), k, world_size) for k in (1, 2)}
    if rank == 0:
        torch.save(results, out)
    dist.barrier()  # no process tears gloo down while its peer still talks to it
    dist.destroy_process_group()


def test_two_processes_of_b_give_the_loss_and_gradients_of_one_process_of_2b(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out.pt")), nprocs=2)
    distributed = torch.load(tmp_path / "out.pt", weights_only=True)
    loss, grads = loss_and_gradients(slice(0, 8), 1, 1)
    learnable_basis = [name for name in grads if name.startswith("loss.")]  # synced like the model's
    assert learnable_basis and all(grads[name] is not None for name in learnable_basis)
    for accum_steps, (dist_loss, dist_grads) in distributed.items():
        torch.testing.assert_close(dist_loss, loss, rtol=1e-4, atol=1e-6)
        assert dist_grads.keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(dist_grads[name], grad, rtol=1e-4, atol=1e-5, msg=f"K={accum_steps} {name}")


def torchrun(synth_dir, out, *extra):
    import subprocess
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]
    return subprocess.run(command + [str(a) for a in ("--data", synth_dir / "train.jsonl", "--batch-size", "16",
                                                      "--workers", "0", "--device", "cpu", "--warmup", "1",
                                                      "--log-every", "1", "--save-every", "1", "--out", out, *extra)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)


def test_torchrun_trains_checkpoints_resumes_and_matches_one_process(synth_dir, tmp_path):
    from conftest import run_python
    first = torchrun(synth_dir, tmp_path / "ddp", "--steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("step 2/2") == 1  # only rank 0 logs
    resumed = torchrun(synth_dir, tmp_path / "ddp", "--steps", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 2" in resumed.stdout and "step 3/3" in resumed.stdout
    assert sorted(p.name for p in (tmp_path / "ddp").glob("ckpt*.pt")) == [
        "ckpt.pt", "ckpt_step1.pt", "ckpt_step2.pt", "ckpt_step3.pt"]
    single = run_python("train.py", "--data", synth_dir / "train.jsonl", "--batch-size", "16", "--workers", "0",
                     "--device", "cpu", "--warmup", "1", "--steps", "3", "--out", tmp_path / "one")
    assert single.returncode == 0, single.stderr
    ddp = torch.load(tmp_path / "ddp/ckpt.pt", weights_only=True)
    one = torch.load(tmp_path / "one/ckpt.pt", weights_only=True)
    assert ddp["step"] == one["step"] == 3
    for name, tensor in one["model"].items():
        torch.testing.assert_close(ddp["model"][name], tensor, rtol=1e-4, atol=1e-4, msg=name)
