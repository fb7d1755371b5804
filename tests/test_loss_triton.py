"""loss_triton.py: the fused Triton kernels against CLIP's loss computed here in float64.

Without a GPU the kernels run on the CPU in the Triton interpreter, which is switched on by
TRITON_INTERPRET=1 and only if that is set before triton is first imported. So this file is
also a script: the tests run it once in a subprocess (`python tests/test_loss_triton.py cpu
OUT.pt`, with TRITON_INTERPRET=1), where every case runs forward and backward and saves its
inputs, value and gradients; the tests then compare those with the float64 reference in this
process. Where CUDA is available, the same script runs once more on the GPU, compiled.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

# name: (N, M, D, positive_offset, symmetric, logit_scale, dtype). At D <= 128 the kernels use
# blocks of 64 rows (D = 512: 16 in fp32, 32 in half precision), so most sizes leave a partial block.
CASES = {
    "square": (128, 128, 32, 0, True, 14.0, torch.float32),               # N == M, whole blocks
    "extra_columns": (48, 112, 32, 0, True, 14.0, torch.float32),         # M > N: negatives
    "ragged_37": (37, 37, 32, 0, True, 14.0, torch.float32),
    "ragged_64_130": (64, 130, 32, 0, True, 14.0, torch.float32),
    "one_pair": (1, 1, 32, 0, True, 14.0, torch.float32),
    "offset_one_way": (20, 70, 32, 33, False, 14.0, torch.float32),      # positives at 33 + i
    "scale_100": (64, 130, 32, 0, True, 100.0, torch.float32),
    "dim_48": (37, 50, 48, 0, True, 14.0, torch.float32),                # D padded to 64
    "dim_512": (40, 72, 512, 0, True, 14.0, torch.float32),
    "fp16": (64, 130, 32, 0, True, 14.0, torch.float16),
    "fp16_offset_one_way": (20, 70, 32, 33, False, 14.0, torch.float16),
    "fp16_dim_512": (40, 72, 512, 0, True, 14.0, torch.float16),         # blocks of 32 rows
    "bf16": (64, 130, 32, 0, True, 14.0, torch.bfloat16),
}
# The interpreter keeps bf16 as raw 16-bit integers and its tl.dot multiplies those bit patterns
# (triton-lang/triton#11584; its docs: no bf16 arithmetic); fp16 checks the same half-precision path.
INTERPRETER_SKIPS = {"bf16"}


def unit_rows(n, d, generator):
    return F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)


def run_kernels(device, path):
    """The script's body: every case through TritonContrastiveLoss, and through loss.py; saved to path."""
    sys.path.insert(0, str(ROOT))
    import loss
    from loss_triton import TritonContrastiveLoss

    def value_and_grads(fn, queries, keys, scale, *args):
        queries = queries.to(device, copy=True).requires_grad_()
        keys = keys.to(device, copy=True).requires_grad_()
        scale = torch.tensor(scale, device=device, requires_grad=True)
        value = fn(queries, keys, scale, *args)
        value.backward()
        return {"value": value.detach().cpu(), "grad_queries": queries.grad.cpu(), "grad_keys": keys.grad.cpu(),
                "grad_scale": scale.grad.cpu(), "grad_fn": type(value.grad_fn).__name__}

    results = {}
    generator = torch.Generator().manual_seed(0)
    for name, (n, m, d, offset, symmetric, scale, dtype) in CASES.items():
        queries, keys = unit_rows(n, d, generator).to(dtype), unit_rows(m, d, generator).to(dtype)
        if device == "cpu" and name in INTERPRETER_SKIPS:
            continue
        results[name] = {"queries": queries, "keys": keys,
                         **value_and_grads(TritonContrastiveLoss.apply, queries, keys, scale, offset, symmetric)}
    # through loss.py's dispatch; an error is saved, for the test to report
    queries, keys = unit_rows(20, 32, generator).float(), unit_rows(70, 32, generator).float()
    for name, call in [("contrastive_loss", lambda q, k, s: loss.contrastive_loss(q, k, s, impl="triton")),
                       ("one_way_contrastive_loss",
                        lambda q, k, s: loss.one_way_contrastive_loss(q, k, s, 33, impl="triton"))]:
        try:
            results[name] = {"queries": queries, "keys": keys, **value_and_grads(call, queries, keys, 14.0)}
        except Exception as error:  # noqa: BLE001  (reported by the test)
            results[name] = {"error": f"{type(error).__name__}: {error}"}
    # inputs the op refuses
    errors = {}
    for name, args in [("float64", (queries.double(), keys.double(), 0, True)),
                       ("symmetric_with_offset", (queries, keys, 33, True)),
                       ("too_few_columns", (keys, queries, 0, False))]:
        q, k, offset, symmetric = args
        try:
            scale = torch.tensor(14.0, device=device)
            TritonContrastiveLoss.apply(q.to(device), k.to(device), scale, offset, symmetric)
            errors[name] = "no error"
        except ValueError as error:
            errors[name] = str(error)
    results["errors"] = errors
    torch.save(results, path)


def reference(queries, keys, scale, offset, symmetric):
    """CLIP's loss in float64 with F.cross_entropy: value and gradients."""
    queries = queries.to(torch.float64, copy=True).requires_grad_()
    keys = keys.to(torch.float64, copy=True).requires_grad_()
    scale = torch.tensor(scale, dtype=torch.float64, requires_grad=True)
    n = queries.shape[0]
    logits = scale * queries @ keys.t()
    value = F.cross_entropy(logits, torch.arange(n) + offset)
    if symmetric:
        value = 0.5 * (value + F.cross_entropy(logits[:, :n].t(), torch.arange(n)))
    value.backward()
    return {"value": value.detach(), "grad_queries": queries.grad, "grad_keys": keys.grad, "grad_scale": scale.grad}


def assert_matches_reference(result, expected, dtype, rtol):
    assert result["grad_fn"] == "TritonContrastiveLossBackward"
    assert result["value"].dtype == torch.float32
    assert result["grad_queries"].dtype == result["grad_keys"].dtype == dtype
    assert result["grad_scale"].dtype == torch.float32
    for key, e in expected.items():
        a = result[key].double()
        assert a.shape == e.shape, key
        largest = e.abs().max().item()
        # relative to the largest entry; an all-zero reference (one pair) must be met to 1e-6
        tolerance = rtol * largest if largest > 0 else 1e-6
        assert (a - e).abs().max().item() <= tolerance, (key, (a - e).abs().max().item(), largest)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", params=DEVICES)
def results(request, tmp_path_factory):
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (pip install triton): loss_triton.py cannot run")
    device = request.param
    path = tmp_path_factory.mktemp("triton") / f"{device}.pt"
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    completed = subprocess.run([sys.executable, __file__, device, str(path)], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return device, torch.load(path)


@pytest.mark.parametrize("name", CASES)
def test_kernel_equals_float64_reference(results, name):
    device, saved = results
    n, m, d, offset, symmetric, scale, dtype = CASES[name]
    if device == "cpu" and name in INTERPRETER_SKIPS:
        pytest.skip("the Triton interpreter computes tl.dot on bf16 bit patterns (triton-lang/triton#11584); "
                    "this case runs on CUDA only")
    result = saved[name]
    # fp32 against the same inputs in float64; half precision against its rounded inputs in float64
    expected = reference(result["queries"], result["keys"], scale, offset, symmetric)
    assert_matches_reference(result, expected, dtype, rtol=1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("name,offset,symmetric", [("contrastive_loss", 0, True),
                                                   ("one_way_contrastive_loss", 33, False)])
def test_loss_py_impl_triton_runs_the_kernel(results, name, offset, symmetric):
    result = results[1][name]
    assert "error" not in result, f"loss.{name}(..., impl='triton') failed: {result.get('error')}"
    expected = reference(result["queries"], result["keys"], 14.0, offset, symmetric)
    assert_matches_reference(result, expected, torch.float32, rtol=1e-5)


def test_refused_inputs(results):
    errors = results[1]["errors"]
    assert "float64" in errors["float64"]
    assert "positive_offset=0" in errors["symmetric_with_offset"]
    assert "need at least" in errors["too_few_columns"]


if __name__ == "__main__":
    run_kernels(sys.argv[1], sys.argv[2])
