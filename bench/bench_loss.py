"""Forward+backward time and peak memory of CLIP's contrastive loss, side by side:

  triton     loss.contrastive_loss(impl="triton")  fused Triton kernels (loss_triton.py): logits
                                                   only in registers; CUDA only, the column is
                                                   skipped with a note on CPU
  triton-bf16  impl="triton-bf16"                  the same with fp32 features as bf16 tiles
                                                   (tensor cores); CUDA with --dtype fp32 only
  tiled      loss.contrastive_loss(impl="tiled")   tiles of rows with torch.mm, hand-written
                                                   backward, no N x M logits
  reference  loss.contrastive_loss_reference       F.cross_entropy on the full logits
  open_clip  open_clip.loss.ClipLoss               (pip install -r bench/requirements.txt; the
                                                   column is skipped with a note if it is absent)

Features are random unit rows, N = M, logit scale 14.3 (CLIP's init, 1/0.07); D = 256 on CPU,
512 on CUDA. The ratio columns divide the first method's numbers (triton on CUDA, tiled on CPU)
by each other method's; loss_diff is each method's loss value relative to the reference's, minus 1.

How it measures
- Time: forward+backward after a warm-up call, wall clock (CUDA: synchronised after each call);
  a call under a second is repeated (up to 10 times, 1 s in all) and its median kept. Runs are
  interleaved: repeat r runs every method once before repeat r+1, so a slow moment of a shared
  machine hits all methods alike; the table shows medians over repeats.
- Peak memory on CPU: torch's CPU allocator is invisible to tracemalloc, so every (method, N,
  repeat) runs in a fresh Python process that creates the inputs, reads its resident-set high
  water mark (VmHWM in /proc/self/status), runs forward+backward, and reads it again. The
  difference is the extra memory the loss needed at its peak (activations, saved tensors,
  gradients), in MiB; it is the same quantity for every method and includes nothing else. Peak
  memory on CUDA: torch.cuda.max_memory_allocated() over the same call, minus what was
  allocated before.

--out FILE writes one size's numbers as a results file (results.py renders the docs' tables from
it): {"bench": "bench_loss", "checkpoint": null, "n": N, "metrics": {"M_s", "M_MiB" per method M,
"time_F/M", "mem_F/M" (F the first method), "loss_diff_M"}, "provenance"}.

    python bench/bench_loss.py                          # CPU, fp32, D 256, N in 1024 4096 16384
    python bench/bench_loss.py --sizes 4096 --out results/fused-loss/bench_loss_cpu_4096.json
    python bench/bench_loss.py --device cuda            # CUDA, bf16, D 512, N in 4096 16384 65536
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import loss  # noqa: E402
from results import write_bench_results  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def open_clip_loss():
    try:
        from open_clip.loss import ClipLoss
    except ImportError:
        return None
    clip_loss = ClipLoss()
    return lambda image, text, scale, chunk_size: clip_loss(image, text, scale)


def loss_function(method):
    """fn(image, text, scale, chunk_size): open_clip's ClipLoss, or loss.contrastive_loss(impl=method)."""
    if method == "open_clip":
        return open_clip_loss()
    return lambda image, text, scale, chunk_size: loss.contrastive_loss(image, text, scale, chunk_size, impl=method)


def inputs(n, dim, dtype, device):
    generator = torch.Generator(device=device).manual_seed(0)
    image = F.normalize(torch.randn(n, dim, generator=generator, device=device), dim=-1).to(dtype)
    text = F.normalize(torch.randn(n, dim, generator=generator, device=device), dim=-1).to(dtype)
    scale = torch.tensor(1 / 0.07, device=device)
    return image.requires_grad_(), text.requires_grad_(), scale.requires_grad_()


def forward_backward(fn, image, text, scale, chunk_size):
    image.grad = text.grad = scale.grad = None
    value = fn(image, text, scale, chunk_size)
    value.backward()
    return value.item()


def median_time(fn, image, text, scale, chunk_size, synchronize=lambda: None):
    times = []
    while len(times) < 10 and sum(times) < 1.0:  # fast calls: the median of several
        start = time.perf_counter()
        forward_backward(fn, image, text, scale, chunk_size)
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def max_rss_mib():
    # VmHWM, this process's own resident-set high-water mark. (getrusage's ru_maxrss would do, but
    # Linux carries it over from the parent across fork and exec: a worker smaller than this
    # script's main process, which has imported open_clip, would then never seem to grow.)
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return kib / 1024


def cpu_worker(args):
    """One measurement in this fresh process; prints a JSON line."""
    fn = loss_function(args.worker)
    image, text, scale = inputs(args.worker_n, args.dim, DTYPES[args.dtype], "cpu")
    before = max_rss_mib()
    value = forward_backward(fn, image, text, scale, args.chunk_size)  # warm-up, and the peak
    peak = max_rss_mib() - before
    seconds = median_time(fn, image, text, scale, args.chunk_size)
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "loss": value}))


def measure_cpu(method, n, args):
    command = [sys.executable, os.path.abspath(__file__), "--worker", method, "--worker-n", str(n),
               "--dim", str(args.dim), "--dtype", args.dtype]
    if args.chunk_size:
        command += ["--chunk-size", str(args.chunk_size)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_cuda(method, n, args):
    fn = loss_function(method)
    image, text, scale = inputs(n, args.dim, DTYPES[args.dtype], "cuda")
    try:
        forward_backward(fn, image, text, scale, args.chunk_size)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        value = forward_backward(fn, image, text, scale, args.chunk_size)
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
        seconds = median_time(fn, image, text, scale, args.chunk_size, torch.cuda.synchronize)
    except torch.OutOfMemoryError:
        return None
    finally:
        del image, text, scale
        torch.cuda.empty_cache()
    return {"seconds": seconds, "peak_mib": peak, "loss": value}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", help="batch sizes N = M "
                        "(default: 1024 4096 16384 on CPU, 4096 16384 65536 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the table shows medians")
    parser.add_argument("--dim", type=int, help="feature dimension D (default: 256 on CPU, 512 on CUDA)")
    parser.add_argument("--dtype", choices=list(DTYPES), help="default: fp32 on CPU, bf16 on CUDA")
    parser.add_argument("--chunk-size", type=int, help="rows per tile of the tiled op (default: its own choice)")
    parser.add_argument("--out", type=Path, help="write the results JSON of one size (--sizes N) to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.dtype = args.dtype or ("fp32" if args.device == "cpu" else "bf16")
    args.dim = args.dim or (256 if args.device == "cpu" else 512)
    if args.worker:
        return cpu_worker(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_loss.py: --device cuda but torch.cuda.is_available() is False")
    sizes = args.sizes or ([1024, 4096, 16384] if args.device == "cpu" else [4096, 16384, 65536])
    if args.out and len(sizes) != 1:
        parser.error("--out writes one size's results file: give one --sizes N")

    methods = ["triton", "triton-bf16", "tiled", "reference", "open_clip"]
    if args.device == "cpu" or args.dtype != "fp32":
        methods.remove("triton-bf16")
    if args.device == "cpu":
        methods.remove("triton")
        print("note: the triton column is skipped on CPU (its kernels need a GPU; the Triton interpreter "
              "that tests them on CPU is far too slow to time)")
    elif importlib.util.find_spec("triton") is None:
        methods = [m for m in methods if not m.startswith("triton")]
        print("note: triton is not installed; its columns are skipped")
    if open_clip_loss() is None:
        methods.remove("open_clip")
        print("note: open_clip is not installed (pip install -r bench/requirements.txt); its column is skipped")
    measure = measure_cpu if args.device == "cpu" else measure_cuda
    results = {}  # (method, n) -> list of measurements
    for repeat in range(args.repeats):
        for n in sizes:
            for method in methods:
                results.setdefault((method, n), []).append(measure(method, n, args))
                print(f"  repeat {repeat + 1}/{args.repeats} N={n} {method}: {results[(method, n)][-1]}",
                      file=sys.stderr, flush=True)

    def median(method, n, key):
        values = [r[key] for r in results[(method, n)] if r is not None]
        return statistics.median(values) if values else float("nan")

    first = methods[0]  # triton on CUDA, tiled on CPU: the ratios compare it with each other method
    metrics = {n: {**{f"{m}_s": median(m, n, "seconds") for m in methods},
                   **{f"{m}_MiB": median(m, n, "peak_mib") for m in methods},
                   **{f"time_{first}/{m}": median(first, n, "seconds") / median(m, n, "seconds") for m in methods[1:]},
                   **{f"mem_{first}/{m}": median(first, n, "peak_mib") / median(m, n, "peak_mib") for m in methods[1:]},
                   **{f"loss_diff_{m}": abs(median(m, n, "loss") / median("reference", n, "loss") - 1)
                      for m in methods if m != "reference"}}
               for n in sizes}
    print(f"\ndevice {args.device}, {args.dtype}, D = {args.dim}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, medians of {args.repeats} interleaved runs, forward+backward")
    print("| N | " + " | ".join(metrics[sizes[0]]) + " |\n|" + "---|" * (1 + len(metrics[sizes[0]])))
    for n in sizes:
        print(f"| {n} | " + " | ".join(f"{value:.4g}" for value in metrics[n].values()) + " |")
    print("(NaN: out of memory)" if any(None in v for v in results.values()) else "")
    if args.out:
        write_bench_results(args.out, "bench_loss", sizes[0], metrics[sizes[0]], seed=0)


if __name__ == "__main__":
    main()
