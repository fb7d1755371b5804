"""Every CUDA path of the project once, in minutes, without internet: one PASS/FAIL table.

    bash bench/gpu_check.sh                               # one CUDA GPU: about 5 minutes, under 8
    TRITON_INTERPRET=1 bash bench/gpu_check.sh --tiny     # any machine: tiny sizes, under a minute

Rows, in order (--tiny: tiny sizes; without CUDA the Triton interpreter runs the kernels and
the rows that only a GPU can answer are SKIP):
  suite           the test suite's CUDA tests (pytest -k cuda: test_loss_triton.py compiled)
  parity          Triton against CLIP's loss in float64 (F.cross_entropy), values and gradients,
                  per product precision (fp32, bf16, fp16, fp32 features as bf16 tiles): N = 1000
                  and 4097, D = 64, 512, 768, M = 2N symmetric and one way with offset N
  speed           forward+backward time and peak memory of triton / tiled / reference
                  (bench_loss.measure_cuda) at N = 16384 and 65536, D = 512, bf16; fp32 at 16384
                  (the training path, plus triton-bf16)
  bar             at N = 65536, D = 512, bf16: triton >= 1.5x the tiled op's speed with <= its
                  memory, and impl="auto" picks it
  auto            what impl="auto" picks on those batches, and its line: FAIL if the kernel failed
                  or disagreed, or if auto kept the one measured >10% slower
  process group   a 1-process group (NCCL; gloo on CPU) through the differentiable all_gather
  train, resume, eval   B-32 bf16 steps and a checkpoint; --resume with --accum-steps 2,
                  --compile and impl="triton-bf16"; eval.py on the checkpoint (--tiny: the tiny
                  model, no --compile, on CPU where there is no CUDA)
  bench_train     bench/bench_train.py, one repeat at B-32

The table goes to stdout and to --out (default out/gpu_check.md); exit status 1 if a row FAILs.
"""

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import torch
import torch.distributed as dist
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
CUDA = torch.cuda.is_available()
if not CUDA:  # before triton is first imported (by loss_triton): kernels on the CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

import bench_loss  # noqa: E402
import loss  # noqa: E402
from synth import write_synth  # noqa: E402

try:
    import loss_triton
except ImportError as missing:
    sys.exit(f"gpu_check: {missing}; the Triton kernels need it (pip install triton)")

DEVICE = torch.device("cuda", torch.cuda.current_device()) if CUDA else torch.device("cpu")
INTERPRETED = not CUDA
NO_BF16 = "the Triton interpreter multiplies bf16 bit patterns (triton-lang/triton#11584): CUDA only"
ROWS = []  # (check, PASS | FAIL | SKIP, details, seconds)


def row(name, check):
    """Run one check; a check returns (status, details); an exception is a FAIL with its first line."""
    start = time.perf_counter()
    try:
        status, details = check()
    except Exception as error:  # noqa: BLE001  (every failure is a row of the table)
        status, details = "FAIL", f"{type(error).__name__}: {' '.join(str(error).split())[:400]}"
    ROWS.append((name, status, details, time.perf_counter() - start))
    print(f"{status} {name}: {details}", file=sys.stderr, flush=True)
    return status


def python(*args, timeout):
    """`python ARGS` from the repository root (without the interpreter switch); rc, stdout + stderr."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    try:
        done = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"over its {timeout} s"
    return done.returncode, done.stdout + done.stderr


def last_line(output):
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


# ----------------------------------------------------------------------------- the checks


def suite():
    if not CUDA:
        return "SKIP", "no CUDA (the suite runs the kernels in the interpreter by itself)"
    rc, output = python("-m", "pytest", "-q", "-k", "cuda", "tests", timeout=300)
    return ("PASS" if rc == 0 else "FAIL"), last_line(output)


def unit_rows(n, d, generator):
    return F.normalize(torch.randn(n, d, generator=generator, device=DEVICE, dtype=torch.float64), dim=-1)


def value_and_grads(fn, queries, keys, scale):
    queries, keys = queries.clone().requires_grad_(), keys.clone().requires_grad_()
    scale = torch.tensor(scale, device=DEVICE, dtype=queries.dtype if queries.dtype == torch.float64 else
                         torch.float32, requires_grad=True)
    value = fn(queries, keys, scale)
    value.backward()
    return [value, queries.grad, keys.grad, scale.grad]


def parity(dtype, bf16_products, shapes):
    """Worst relative error over shapes (N, D) x (symmetric M = 2N, one way with offset N)."""
    def check():
        if INTERPRETED and (dtype == torch.bfloat16 or bf16_products):
            return "SKIP", NO_BF16
        generator = torch.Generator(DEVICE).manual_seed(0)
        tolerance = loss_triton.TOLERANCE[torch.bfloat16 if bf16_products else dtype]
        worst, where = 0.0, ""
        for n, d in shapes:
            queries, keys = unit_rows(n, d, generator).to(dtype), unit_rows(2 * n, d, generator).to(dtype)
            for offset, symmetric in ((0, True), (n, False)):
                got = value_and_grads(lambda q, k, s: loss_triton.TritonContrastiveLoss.apply(
                    q, k, s, offset, symmetric, bf16_products), queries, keys, 14.0)
                # the float64 reference sees what the tiles hold: the features, rounded to bf16 if asked
                rounded = [x.to(torch.bfloat16) if bf16_products else x for x in (queries, keys)]
                expected = value_and_grads(
                    lambda q, k, s: loss.contrastive_loss_reference(q, k, s) if symmetric else
                    loss.one_way_contrastive_loss_reference(q, k, s, offset), *(x.double() for x in rounded), 14.0)
                error = max(loss_triton.relative_error(g, e) for g, e in zip(got, expected))
                if not error <= worst:
                    worst, where = error, f"N {n}, D {d}, {'M = 2N' if symmetric else f'one way, offset {n}'}"
        return ("PASS" if worst <= tolerance else "FAIL"), \
            f"worst {worst:.1e} at {where} (tolerance {tolerance:.0e}; {2 * len(shapes)} cases, values and gradients)"
    return check


MEASURED = {}  # (dtype name, N) -> {method: bench_loss's measurement or None (out of memory)}


def measure(method, n, dim, dtype_name):
    if CUDA:
        return bench_loss.measure_cuda(method, n, SimpleNamespace(dim=dim, dtype=dtype_name, chunk_size=None))
    fn = bench_loss.loss_function(method)  # the interpreter's time, for the code path only; memory not read
    image, text, scale = bench_loss.inputs(n, dim, bench_loss.DTYPES[dtype_name], "cpu")
    value = bench_loss.forward_backward(fn, image, text, scale, None)
    return {"seconds": bench_loss.median_time(fn, image, text, scale, None), "peak_mib": float("nan"), "loss": value}


def speed(dtype_name, n, dim):
    def check():
        methods = ["triton"] + (["triton-bf16"] if dtype_name == "fp32" and CUDA else []) + ["tiled", "reference"]
        results = MEASURED[(dtype_name, n)] = {m: measure(m, n, dim, dtype_name) for m in methods}
        shown = "; ".join(f"{m} out of memory" if r is None else f"{m} {1e3 * r['seconds']:.1f} ms" +
                          ("" if r["peak_mib"] != r["peak_mib"] else f" {r['peak_mib']:.0f} MiB")  # NaN: not read
                          for m, r in results.items())
        tolerance = loss_triton.TOLERANCE[bench_loss.DTYPES[dtype_name]]
        reference = results["reference"]
        wrong = [m for m, r in results.items() if r is not None and reference is not None and m != "triton-bf16"
                 and not abs(r["loss"] / reference["loss"] - 1) <= tolerance]
        if wrong:
            return "FAIL", f"loss differs from the reference: {', '.join(wrong)}; {shown}"
        if results["triton"] is None or results["tiled"] is None:
            return "FAIL", shown
        if not CUDA:
            return "SKIP", f"no CUDA: interpreter timings say nothing of a GPU; {shown}"
        return "PASS", f"triton/tiled time {results['triton']['seconds'] / results['tiled']['seconds']:.2f}; {shown}"
    return check


def decide(dtype_name, n, dim):
    """impl="auto" on a fresh batch of this kind: (choice, its stderr lines)."""
    loss_triton.AUTO_CHOICES.clear()
    image, text, scale = bench_loss.inputs(n, dim, bench_loss.DTYPES[dtype_name], DEVICE.type)
    stderr = io.StringIO()
    devices = (DEVICE.type,)  # on CPU the interpreter stands in for CUDA
    with redirect_stderr(stderr), mock.patch.object(loss, "AUTO_TRITON_DEVICES", devices):
        loss.contrastive_loss(image, text, scale, impl="auto").backward()
    lines = stderr.getvalue().splitlines()
    return next(iter(loss_triton.AUTO_CHOICES.values()), "tiled"), lines


DECIDED = {}  # (dtype name, N) -> what impl="auto" picked


def auto(dtype_name, n, dim):
    def check():
        choice, lines = decide(dtype_name, n, dim)
        DECIDED[(dtype_name, n)] = choice
        said = lines[0] if len(lines) == 1 else f"{len(lines)} lines: {' / '.join(lines)}"
        if len(lines) != 1 or lines[0].startswith("warning"):
            return "FAIL", said
        timed = MEASURED.get((dtype_name, n), {})
        other = "tiled" if choice == "triton" else "triton"
        if timed.get(choice) and timed.get(other) and timed[choice]["seconds"] > 1.1 * timed[other]["seconds"]:
            return "FAIL", f"kept {choice}, measured slower than {other} by bench_loss; {said}"
        return "PASS", said
    return check


def auto_on_cpu():
    image, text, scale = bench_loss.inputs(64, 32, torch.float32, "cpu")
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        value = loss.contrastive_loss(image, text, scale, impl="auto")
    kind = type(value.grad_fn).__name__
    quiet = stderr.getvalue() == ""
    return ("PASS" if kind == "TiledContrastiveLossBackward" and quiet else "FAIL"), \
        f"grad_fn {kind}, {'nothing' if quiet else 'something'} printed"


def bar(tiny):
    def check():
        if tiny or not CUDA:
            return "SKIP", "no CUDA, or --tiny: the bar is for N = 65536 on a GPU"
        timed = MEASURED.get(("bf16", 65536), {})
        triton_run, tiled_run = timed.get("triton"), timed.get("tiled")
        if not triton_run or not tiled_run:
            return "FAIL", "the speed row did not measure both"
        speedup = tiled_run["seconds"] / triton_run["seconds"]
        memory = triton_run["peak_mib"] / tiled_run["peak_mib"]
        choice = DECIDED.get(("bf16", 65536))
        passed = speedup >= 1.5 and memory <= 1.0 and choice == "triton"
        return ("PASS" if passed else "FAIL"), \
            f"triton {speedup:.2f}x the tiled op's speed (>= 1.5), {memory:.2f}x its memory (<= 1), auto picks {choice}"
    return check


def process_group():
    """One process, world size 1: the all_gather of loss.gather_features' many-process path, with gradient."""
    from torch.distributed.nn.functional import all_gather
    backend = "nccl" if CUDA else "gloo"
    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group(backend, init_method=f"file://{folder}/rendezvous", rank=0, world_size=1,
                                **({"device_id": DEVICE} if CUDA else {}))
        try:
            generator = torch.Generator(DEVICE).manual_seed(0)
            image, text = unit_rows(256, 64, generator).float(), unit_rows(256, 64, generator).float()
            gathered = value_and_grads(lambda q, k, s: loss.contrastive_loss(torch.cat(all_gather(q)), k, s,
                                                                             impl="tiled"), image, text, 14.0)
            direct = value_and_grads(lambda q, k, s: loss.contrastive_loss(q, k, s, impl="tiled"), image, text, 14.0)
            total = torch.ones(1, device=DEVICE)
            dist.all_reduce(total)
        finally:
            dist.destroy_process_group()
    error = max(loss_triton.relative_error(g, e) for g, e in zip(gathered, direct))
    passed = error <= 1e-6 and total.item() == 1.0
    return ("PASS" if passed else "FAIL"), f"{backend}: loss and gradients through all_gather within {error:.0e}"


class Training:
    """A tiny world, a run, its resumption and its evaluation, in one temporary folder."""

    def __init__(self, folder, tiny):
        self.world, self.run, self.tiny = Path(folder) / "world", Path(folder) / "run", tiny
        self.device = DEVICE.type

    def train(self):
        write_synth(self.world, n_train=64, n_test=16, log=lambda *_: None)  # a --data file: no pretraining
        model = ["--model", "tiny" if self.tiny else "B-32"]
        rc, output = python("train.py", "--data", self.world / "train.jsonl", *model, "--precision", "bf16",
                            "--steps", 2, "--batch-size", 16, "--warmup", 1, "--log-every", 1, "--save-every", 2,
                            "--workers", 0 if self.tiny else 2, "--device", self.device, "--out", self.run,
                            timeout=300)
        said = [line for line in output.splitlines() if 'impl="auto"' in line]
        if rc != 0 or not (self.run / "ckpt.pt").is_file():
            return "FAIL", last_line(output)
        return "PASS", f"{' '.join(model)}, bf16, 2 steps, ckpt.pt written; {said[0] if said else last_line(output)}"

    def resume(self):
        if not (self.run / "ckpt.pt").is_file():
            return "FAIL", "no checkpoint from the train row"
        # torch.compile here, on the resumed run (compiling once); bf16 tiles need CUDA (the interpreter's bf16)
        extra = [] if self.tiny else ["--compile"] + (["--contrastive-impl", "triton-bf16"] if CUDA else [])
        rc, output = python("train.py", "--out", self.run, "--resume", "--steps", 4, "--accum-steps", 2, *extra,
                            "--device", self.device, timeout=300)
        steps = [json.loads(line)["step"] for line in (self.run / "metrics.jsonl").read_text().splitlines()]
        if rc != 0 or steps[-1] != 4 or "resumed from" not in output:
            return "FAIL", f"metrics steps {steps}; {last_line(output)}"
        return "PASS", " ".join([f"resumed at step 2, steps {steps} logged, --accum-steps 2", *extra])

    def evaluate(self):
        results = self.run / "check_results.json"
        rc, output = python("eval.py", "--bench", "synth", "--ckpt", self.run / "ckpt.pt", "--data-root", self.world,
                            "--device", self.device, "--workers", 0, "--out", results, timeout=180)
        if rc != 0 or not results.is_file():
            return "FAIL", last_line(output)
        metrics = json.loads(results.read_text())["metrics"]
        return "PASS", f"eval.py --bench synth on {self.device}: {len(metrics)} metrics, " \
                       f"orig_over_neg {metrics.get('orig_over_neg', float('nan')):.3f}"


def bench_train():
    if not CUDA:
        return "SKIP", "no CUDA (on CPU: python bench/bench_train.py --presets tiny)"
    rc, output = python("bench/bench_train.py", "--device", "cuda", "--presets", "B-32", "--batch-size", 64,
                        "--repeats", 1, "--warmup", 1, timeout=240)
    return ("PASS" if rc == 0 else "FAIL"), last_line(output)


# ----------------------------------------------------------------------------- the table


def machine():
    name = f"{torch.cuda.get_device_name(DEVICE)} (CUDA {torch.version.cuda})" if CUDA else \
        f"no CUDA: {platform.processor() or platform.machine()} CPU, Triton interpreter"
    import triton
    return f"{name}; torch {torch.__version__}, triton {triton.__version__}, Python {platform.python_version()}"


def table(command, seconds):
    counts = {status: sum(r[1] == status for r in ROWS) for status in ("PASS", "FAIL", "SKIP")}
    lines = [f"`{command}` on {machine()}, {time.strftime('%Y-%m-%d %H:%M')}, {seconds:.0f} s", "",
             "| check | result | s | details |", "|---|---|---:|---|"]
    lines += [f"| {name} | {status} | {s:.1f} | {details.replace('|', '/')} |" for name, status, details, s in ROWS]
    return "\n".join(lines + ["", ", ".join(f"{count} {status}" for status, count in counts.items())]) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes; without CUDA, the Triton interpreter")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "gpu_check.md", help="(default: %(default)s)")
    args = parser.parse_args()
    if not CUDA and not args.tiny:
        sys.exit("gpu_check: no CUDA device (torch.cuda.is_available() is False); --tiny checks the script "
                 "itself on the CPU, with the Triton interpreter")
    begin = time.perf_counter()
    shapes = [(37, 32), (70, 300)] if args.tiny else [(n, d) for n in (1000, 4097) for d in (64, 512, 768)]
    speeds = [("bf16" if CUDA else "fp16", 128, 64), ("fp32", 128, 64)] if args.tiny else \
        [("bf16", 16384, 512), ("bf16", 65536, 512), ("fp32", 16384, 512)]
    row("suite: CUDA tests", suite)
    precisions = [("fp32", torch.float32, False), ("bf16", torch.bfloat16, False), ("fp16", torch.float16, False),
                  ("bf16 tiles of fp32 features", torch.float32, True)]
    for label, dtype, bf16_products in precisions:
        row(f"parity {label}", parity(dtype, bf16_products, shapes))
    for dtype_name, n, dim in speeds:
        row(f"speed {dtype_name} N {n} D {dim}", speed(dtype_name, n, dim))
    for dtype_name, n, dim in speeds:
        row(f"auto {dtype_name} N {n} D {dim}", auto(dtype_name, n, dim))
    row("bar bf16 N 65536 D 512", bar(args.tiny))
    row("auto on CPU", auto_on_cpu)
    row("process group", process_group)
    with tempfile.TemporaryDirectory() as folder:
        training = Training(folder, args.tiny)
        row("train", training.train)
        row("resume", training.resume)
        row("eval", training.evaluate)
    row("bench_train", bench_train)
    text = table(f"bash bench/gpu_check.sh{' --tiny' if args.tiny else ''}", time.perf_counter() - begin)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}", file=sys.stderr)
    sys.exit(1 if any(status == "FAIL" for _, status, _, _ in ROWS) else 0)


if __name__ == "__main__":
    main()
