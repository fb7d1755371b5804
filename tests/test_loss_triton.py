"""loss_triton.py: the fused Triton kernels against CLIP's loss computed here in float64, and
impl="auto", which must keep the faster of the kernel and the tiled op only where it is correct.

Without a GPU the kernels run on the CPU in the Triton interpreter, which is switched on by
TRITON_INTERPRET=1 and only if that is set before triton is first imported. So this file is
also a script: the tests run it once in a subprocess (`python tests/test_loss_triton.py cpu
OUT.pt`, with TRITON_INTERPRET=1), where every case runs forward and backward and saves its
inputs, value and gradients, and impl="auto" meets a real, a failing, a wrong and a fast kernel;
the tests then compare those with the float64 reference in this process. Where CUDA is
available, the same script runs once more on the GPU, compiled.
"""

import importlib.util
import io
import os
import subprocess
import sys
import time
from contextlib import ExitStack, redirect_stderr
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import loss  # noqa: E402


class Case(NamedTuple):
    n: int
    m: int
    d: int
    offset: int = 0
    symmetric: bool = True
    scale: float = 14.0
    dtype: torch.dtype = torch.float32
    bf16_products: bool = False    # fp32 features, bf16 tiles (impl="triton-bf16")
    confident: bool = False        # queries = keys, all near one direction: most of P is tiny


# The kernels' blocks: 64 or 128 rows, D in chunks of 64, dQ and dK written 256 dims per program,
# so most sizes leave partial blocks and D = 300 and 768 take several programs per block of rows.
CASES = {
    "square": Case(128, 128, 32),                                  # N == M, whole blocks
    "extra_columns": Case(48, 112, 32),                            # M > N: negatives
    "one_pair": Case(1, 1, 32),
    "ragged_37": Case(37, 37, 32),
    "ragged_64_130": Case(64, 130, 32),
    "one_pair_dim_768": Case(1, 1, 768),
    "ragged_37_dim_768": Case(37, 37, 768),
    "ragged_64_130_dim_768": Case(64, 130, 768),
    "offset_one_way": Case(20, 70, 32, offset=33, symmetric=False),  # positives at 33 + i
    "offset_one_way_dim_150": Case(20, 70, 150, offset=33, symmetric=False),  # a partial chunk of D
    "scale_100": Case(64, 130, 32, scale=100.0),
    "fp16": Case(64, 130, 32, dtype=torch.float16),
    "fp16_offset_one_way": Case(20, 70, 32, offset=33, symmetric=False, dtype=torch.float16),
    "fp16_dim_300": Case(40, 72, 300, dtype=torch.float16),
    # w = 1/(2N) folded into G before its cast to fp16 flushed this case's small entries (2e-2 off)
    "fp16_confident": Case(256, 256, 32, scale=30.0, dtype=torch.float16, confident=True),
    "bf16": Case(64, 130, 32, dtype=torch.bfloat16),
    "bf16_dim_768": Case(64, 130, 768, dtype=torch.bfloat16),
    "bf16_products": Case(64, 130, 768, bf16_products=True),
    "bf16_products_offset_one_way": Case(20, 70, 32, offset=33, symmetric=False, bf16_products=True),
}


def interpreter_skips(case):
    # The interpreter keeps bf16 as raw 16-bit integers and its tl.dot multiplies those bit patterns
    # (triton-lang/triton#11584; its docs: no bf16 arithmetic); fp16 checks the same half-precision path.
    return case.dtype == torch.bfloat16 or case.bf16_products


def features(case, generator):
    """Unit rows [N, D] and [M, D] in the case's dtype (float64 draws, rounded once)."""
    keys = F.normalize(torch.randn(case.m, case.d, generator=generator, dtype=torch.float64), dim=-1)
    if case.confident:
        direction = F.normalize(torch.randn(case.d, generator=generator, dtype=torch.float64), dim=0)
        keys = F.normalize(direction + keys, dim=-1)
        queries = keys[:case.n].clone()
    else:
        queries = F.normalize(torch.randn(case.n, case.d, generator=generator, dtype=torch.float64), dim=-1)
    return queries.to(case.dtype), keys.to(case.dtype)


def value_and_grads(fn, queries, keys, scale, device):
    queries = queries.to(device, copy=True).requires_grad_()
    keys = keys.to(device, copy=True).requires_grad_()
    scale = torch.tensor(scale, device=device, requires_grad=True)
    value = fn(queries, keys, scale)
    value.backward()
    return {"queries": queries.detach().cpu(), "keys": keys.detach().cpu(), "value": value.detach().cpu(),
            "grad_queries": queries.grad.cpu(), "grad_keys": keys.grad.cpu(), "grad_scale": scale.grad.cpu(),
            "grad_fn": type(value.grad_fn).__name__}


def auto_scenarios(device, generator):
    """impl="auto" through loss.py against a real kernel, a slow tiled op, a failing and a wrong kernel."""
    import loss_triton

    queries, keys = features(Case(20, 40, 32), generator)
    other_size = features(Case(70, 140, 32), generator)
    real_tiled, real_triton = loss.TiledContrastiveLoss.apply, loss_triton.TritonContrastiveLoss.apply

    def slow_tiled(*args):
        time.sleep(0.4)  # far slower than the interpreted kernel on these sizes
        return real_tiled(*args)

    def failing(*args):
        raise RuntimeError("simulated: out of resources\nsecond line of the message")

    def wrong(*args):
        return 1.01 * real_triton(*args)

    patches = {"measured": [], "other_size_class": [], "tiled_slow": [(loss.TiledContrastiveLoss, slow_tiled)],
               "kernel_raises": [(loss_triton.TritonContrastiveLoss, failing)],
               "kernel_wrong": [(loss_triton.TritonContrastiveLoss, wrong)]}
    results = {}
    with mock.patch.object(loss, "AUTO_TRITON_DEVICES", ("cuda", "cpu")):  # the interpreter stands in for CUDA
        for name, replacements in patches.items():
            if name != "other_size_class":  # measured right after "measured": both decisions are kept
                loss_triton.AUTO_CHOICES.clear()
            q, k = other_size if name == "other_size_class" else (queries, keys)
            stderr = io.StringIO()
            with ExitStack() as stack:
                stack.enter_context(redirect_stderr(stderr))
                for cls, apply in replacements:
                    stack.enter_context(mock.patch.object(cls, "apply", apply))
                results[name] = value_and_grads(lambda a, b, s: loss.contrastive_loss(a, b, s, impl="auto"),
                                                q, k, 14.0, device)
                results[name]["again"] = loss.contrastive_loss(q.to(device), k.to(device), 14.0, impl="auto").cpu()
            results[name]["stderr"] = stderr.getvalue().splitlines()
            results[name]["choices"] = dict(loss_triton.AUTO_CHOICES)
    return results


def run_kernels(device, path):
    """The script's body: every case through TritonContrastiveLoss and loss.py; saved to path."""
    from loss_triton import TritonContrastiveLoss

    results = {}
    generator = torch.Generator().manual_seed(0)
    for name, case in CASES.items():
        queries, keys = features(case, generator)
        if device == "cpu" and interpreter_skips(case):
            continue
        results[name] = value_and_grads(lambda q, k, s: TritonContrastiveLoss.apply(
            q, k, s, case.offset, case.symmetric, case.bf16_products), queries, keys, case.scale, device)
    # through loss.py's dispatch; an error is saved, for the test to report
    queries, keys = features(Case(20, 70, 32), generator)
    calls = {"contrastive_loss": lambda q, k, s: loss.contrastive_loss(q, k, s, impl="triton"),
             "one_way_contrastive_loss": lambda q, k, s: loss.one_way_contrastive_loss(q, k, s, 33, impl="triton")}
    if device == "cuda":
        calls["contrastive_loss_bf16"] = lambda q, k, s: loss.contrastive_loss(q, k, s, impl="triton-bf16")
    for name, call in calls.items():
        try:
            results[name] = value_and_grads(call, queries, keys, 14.0, device)
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
    results["auto"] = auto_scenarios(device, generator)
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


def assert_matches_reference(result, expected, rtol, grad_fn="TritonContrastiveLossBackward"):
    assert result["grad_fn"] == grad_fn
    assert result["value"].dtype == result["grad_scale"].dtype == torch.float32
    assert result["grad_queries"].dtype == result["queries"].dtype
    assert result["grad_keys"].dtype == result["keys"].dtype
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
    case = CASES[name]
    if device == "cpu" and interpreter_skips(case):
        pytest.skip("the Triton interpreter computes tl.dot on bf16 bit patterns (triton-lang/triton#11584); "
                    "this case runs on CUDA only")
    result = saved[name]
    # fp32 against the same inputs in float64; 16-bit tiles against their rounded inputs in float64
    inputs = [result[key].to(torch.bfloat16) if case.bf16_products else result[key] for key in ("queries", "keys")]
    expected = reference(*inputs, case.scale, case.offset, case.symmetric)
    exact = case.dtype == torch.float32 and not case.bf16_products
    assert_matches_reference(result, expected, rtol=1e-5 if exact else 1e-2)


@pytest.mark.parametrize("name,offset,symmetric", [("contrastive_loss", 0, True),
                                                   ("one_way_contrastive_loss", 33, False),
                                                   ("contrastive_loss_bf16", 0, True)])
def test_loss_py_impl_triton_runs_the_kernel(results, name, offset, symmetric):
    device, saved = results
    if name not in saved:
        pytest.skip("impl='triton-bf16' multiplies bf16 tiles: CUDA only (triton-lang/triton#11584)")
    result = saved[name]
    assert "error" not in result, f"loss.{name}(..., impl='triton') failed: {result.get('error')}"
    bf16 = name.endswith("bf16")
    inputs = [result[key].to(torch.bfloat16) if bf16 else result[key] for key in ("queries", "keys")]
    assert_matches_reference(result, reference(*inputs, 14.0, offset, symmetric), rtol=1e-2 if bf16 else 1e-5)


def test_refused_inputs(results):
    errors = results[1]["errors"]
    assert "float64" in errors["float64"]
    assert "positive_offset=0" in errors["symmetric_with_offset"]
    assert "need at least" in errors["too_few_columns"]


def auto_result(results, name):
    result = results[1]["auto"][name]
    expected = reference(result["queries"], result["keys"], 14.0, 0, True)
    return result, expected


def test_auto_on_cpu_is_the_tiled_op(capfd):
    queries, keys = features(Case(20, 40, 32), torch.Generator().manual_seed(1))
    result = value_and_grads(lambda q, k, s: loss.contrastive_loss(q, k, s, impl="auto"), queries, keys, 14.0, "cpu")
    assert_matches_reference(result, reference(queries, keys, 14.0, 0, True), 1e-5, "TiledContrastiveLossBackward")
    assert capfd.readouterr().err == ""  # nothing measured, nothing said


def test_auto_keeps_the_faster_correct_implementation_once_per_kind_of_call(results):
    device = results[0]
    measured, expected = auto_result(results, "measured")
    [line] = measured["stderr"]  # one line for the decision, none for the second call
    choice = next(iter(measured["choices"].values()))
    grad_fn = "TritonContrastiveLossBackward" if choice == "triton" else "TiledContrastiveLossBackward"
    assert_matches_reference(measured, expected, 1e-5, grad_fn)
    assert line.startswith('contrastive_loss impl="auto"') and f": {choice}, " in line and "faster than" in line
    if device == "cpu":
        assert choice == "tiled"  # the interpreter is far slower than torch.mm
    # a batch of another size class is measured anew, and the first decision is kept beside it
    other, _ = auto_result(results, "other_size_class")
    assert len(other["stderr"]) == 1 and "N in [64, 128)" in other["stderr"][0]
    assert len(other["choices"]) == 2
    # with the tiled op made slow, the kernel is kept, and it is what runs
    fast, expected = auto_result(results, "tiled_slow")
    assert list(fast["choices"].values()) == ["triton"] and ": triton, " in fast["stderr"][0]
    assert_matches_reference(fast, expected, 1e-5)
    assert torch.allclose(fast["again"], fast["value"])


@pytest.mark.parametrize("name,says", [("kernel_raises", "the Triton kernel failed (RuntimeError: simulated"),
                                       ("kernel_wrong", "the Triton kernel differs from the tiled op by")])
def test_auto_falls_back_to_the_tiled_op_with_one_warning(results, name, says):
    result, expected = auto_result(results, name)
    assert_matches_reference(result, expected, 1e-5, "TiledContrastiveLossBackward")
    [line] = result["stderr"]
    assert line.startswith("warning: ") and says in line and line.endswith("using the tiled op")
    assert list(result["choices"].values()) == ["tiled"]


# ----------------------------------------------------------------------------- compiled for Hopper, without a GPU

HOPPER = ("cuda", 90, 32)  # H100/H200: sm_90, 32 threads a warp
SHARED_MEMORY = 227 * 1024  # per block, opt-in, on sm_90


def compile_for_hopper(kernel_name, dtype, bf16_products, dim):
    """loss_triton's lse or grad kernel, compiled ahead of time for sm_90 as the JIT would launch it for
    features of `dtype` at this D (aligned pointers; D and strides multiples of 16): ptxas runs, no GPU."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import loss_triton
    lse_config, grad_config = loss_triton._configs(dtype, dim, bf16_products)
    kernel, config = (loss_triton._lse_kernel, lse_config) if kernel_name == "lse" else \
        (loss_triton._grad_kernel, grad_config)
    constants = {name: value for name, value in config.items() if not name.startswith("num_")}
    features = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16"}[dtype]
    signature = {name: "constexpr" if name in constants else
                 features if name in ("a_pointer", "b_pointer", "grad_a_pointer") else
                 "*fp32" if name.endswith("_pointer") else "fp32" if name == "positive_weight" else "i32"
                 for name in kernel.arg_names}
    aligned = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(kernel.arg_names)
               if signature[name].startswith("*") or name in ("dim", "stride_a", "stride_b")}
    return triton.compile(ASTSource(kernel, signature, constants, aligned), target=GPUTarget(*HOPPER),
                          options={"num_warps": config["num_warps"], "num_stages": config["num_stages"]})


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreted kernels do not compile")
@pytest.mark.parametrize("kernel_name", ["lse", "grad"])
def test_bf16_kernels_compile_for_hopper_on_tensor_cores(kernel_name):
    compiled = compile_for_hopper(kernel_name, torch.bfloat16, False, 768)
    assert "wgmma.mma_async" in compiled.asm["ptx"]  # Hopper's warpgroup matrix instructions
    assert "cp.async" in compiled.asm["ptx"]  # tiles copied to shared memory ahead of use (pipelined)
    assert compiled.metadata.shared <= SHARED_MEMORY


def print_hopper_table():
    """`python tests/test_loss_triton.py hopper`: every kernel and precision compiled for sm_90, with
    ptxas's registers and spills, as a markdown table (docs/fused-loss-gpu.md shows it)."""
    import re
    import tempfile

    import triton
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    print("| products | D | kernel | shared KiB | registers | spill bytes | wgmma | cp.async |\n|" + "---|" * 8)
    for label, dtype, bf16_products in [("fp32", torch.float32, False), ("bf16", torch.bfloat16, False),
                                        ("fp16", torch.float16, False), ("bf16 tiles of fp32", torch.float32, True)]:
        for dim in (64, 512, 768):
            for kernel_name in ("lse", "grad"):
                compiled = compile_for_hopper(kernel_name, dtype, bf16_products, dim)
                ptx = compiled.asm["ptx"]
                with tempfile.NamedTemporaryFile("w", suffix=".ptx") as file:
                    file.write(ptx)
                    file.flush()
                    report = subprocess.run([str(ptxas), "-arch=sm_90a", "-v", file.name, "-o", os.devnull],
                                            capture_output=True, text=True).stderr
                registers = re.search(r"Used (\d+) registers", report).group(1)
                spills = re.search(r"(\d+) bytes spill stores", report).group(1)
                print(f"| {label} | {dim} | {kernel_name} | {compiled.metadata.shared // 1024} | {registers} | "
                      f"{spills} | {'yes' if 'wgmma.mma_async' in ptx else 'no'} | "
                      f"{'yes' if 'cp.async' in ptx else 'no'} |", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "hopper":
        print_hopper_table()
    else:
        run_kernels(sys.argv[1], sys.argv[2])
