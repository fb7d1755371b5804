"""
Captions in, SemCLIP triplets out: (caption, paraphrase, negation), with --true-negations also a true negation
(of an object absent from the image), made by an LLM behind any OpenAI-compatible chat-completions endpoint.

Why it is built the way it is:
- 200k+ captions: requests run concurrently (threads) through llm_client.py, which retries what a
  flaky server gets wrong and stops the run when the server is down (that is not a bad caption).
- Lose nothing: every caption ends as exactly one line in the output or in <out>.rejects.jsonl
  (with the reason). Each line is one write(), so a run killed at any moment (even kill -9) loses
  at most the requests in flight; rerunning the same command does only the captions not yet done.
- Standard library only, so it starts fast and runs wherever Python does.
- The API key is read from an environment variable and never printed or written.
"""

import argparse
import csv
import io
import json
import os
import sys
import time
import urllib.parse
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import timedelta
from pathlib import Path

import absent_objects
from absent_objects import words
from errors import DataError, count, non_negative, non_negative_int, positive
from llm_client import Abandoned, BadAnswer, Client, RequestFailed, StopRun, snippet

# -----------------------------------------------------------------------------
# The prompts: the heart of the method. Instructions go in the system message; the user message
# carries only the data (the caption, the text to translate, the triplet to check). The negation
# rule is this project's, in CC-Neg's style (deny one thing that is present); back-translation is
# an option of this tool. The SemCLIP authors' notebook asked Phi-4 to "Rephrase" and for "a
# completely false version" of each caption; the verifier plays their second LLM (Mistral).

PARAPHRASE_RULE = ('"paraphrase": the same meaning in different words. Keep every object, attribute, count '
                   "and relation; add nothing, drop nothing.")
NEGATION_RULE = ('"negation": one fluent sentence that is FALSE for the image because it denies one thing '
                 'the caption says is present (an object, an attribute or an action), using "no", "not" '
                 'or "without". Keep the rest of the caption. Do not just swap a word and do not write '
                 '"It is not true that".')
EXAMPLE_CAPTION = "A woman holding an umbrella walks past a bus stop."
EXAMPLE_PARAPHRASE = "A woman with an umbrella is walking by a bus stop."
EXAMPLE_NEGATION = "A woman walks past a bus stop without an umbrella."


def json_task(rules, example_answer, given="one image caption", example=None):
    """A system prompt that asks for one JSON object with the given rules, plus one example. The user
    message is the caption itself, or (with `example`, the example's data) a JSON object of data."""
    rules = "\n".join(rules)
    shown = f"Example input: {json.dumps(example)}" if example else f"Example caption: {EXAMPLE_CAPTION}"
    return (f"You write training data for an image-text model. The user gives you {given}.\n"
            f"Answer with a JSON object only, with these keys:\n{rules}\n\n"
            f"{shown}\nExample answer: {json.dumps(example_answer)}")


TRIPLET_PROMPT = json_task([PARAPHRASE_RULE, NEGATION_RULE],
                           {"paraphrase": EXAMPLE_PARAPHRASE, "negation": EXAMPLE_NEGATION})
NEGATION_PROMPT = json_task([NEGATION_RULE], {"negation": EXAMPLE_NEGATION})
TRANSLATE_PROMPT = ("Translate the user's text into {language}. Keep the meaning exactly. "
                    'Answer with a JSON object only: {{"translation": "..."}}')
VERIFY_PROMPT = ("You check training data for an image-text model. The user gives you a JSON object with "
                 'an image "caption", a "paraphrase" and a "negation".\n'
                 "Answer with a JSON object only, with two true/false keys:\n"
                 '"paraphrase_ok": true if the paraphrase means exactly the same as the caption.\n'
                 '"negation_ok": true if the negation is a fluent sentence that contradicts the caption '
                 "by denying something the caption says is present.")
PIVOT_LANGUAGES = {"de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
                   "nl": "Dutch", "ru": "Russian", "zh": "Chinese", "ja": "Japanese"}

# True negations (--true-negations), for L_truth (train.py --loss semclip_tn): a TRUE sentence that keeps the
# caption and denies an object ABSENT from the image. NegBench (Alhamoud et al., CVPR 2025) has an LLM name the
# object and a detector confirm that it is absent; here the image's labels rule it out (absent_objects.py picks
# it) and the LLM only writes the sentence. Without labels the LLM names the object too, and nothing checks it.

TRUE_NEGATION_RULE = ('"true_negation": one fluent sentence that is TRUE for the image: it keeps everything the '
                      'caption says and adds that the absent object is not there, using "no" or "without" '
                      '("..., and there is no dog"). Deny nothing the caption says is present.')
ABSENT_OBJECT_RULE = ('"absent_object": one object (a noun of one to three words) that the caption does not '
                      "mention and that a scene like this could plausibly contain.")
EXAMPLE_ABSENT_OBJECT = "dog"
EXAMPLE_TRUE_NEGATION = "A woman holding an umbrella walks past a bus stop, and there is no dog."
TRUE_NEGATION_PROMPT = json_task(
    [TRUE_NEGATION_RULE], {"true_negation": EXAMPLE_TRUE_NEGATION},
    given='a JSON object: an image "caption" and an "absent_object", an object that is NOT in the image',
    example={"caption": EXAMPLE_CAPTION, "absent_object": EXAMPLE_ABSENT_OBJECT})
PROPOSE_ABSENT_PROMPT = json_task(
    [ABSENT_OBJECT_RULE, TRUE_NEGATION_RULE],
    {"absent_object": EXAMPLE_ABSENT_OBJECT, "true_negation": EXAMPLE_TRUE_NEGATION},
    given='a JSON object with an image "caption"', example={"caption": EXAMPLE_CAPTION})
VERIFY_TRUE_NEGATION_PROMPT = (
    "You check training data for an image-text model. The user gives you a JSON object with an image "
    '"caption", an "absent_object" that is not in the image and a "true_negation".\n'
    'Answer with a JSON object only, with one true/false key:\n"true_negation_ok": true if the true negation '
    "is a fluent sentence that keeps what the caption says and denies the absent object, and nothing else.")

# -----------------------------------------------------------------------------
# Command line

def http_url(text):
    """An argparse type: the endpoint's base URL, http(s) with a host, so that a typo fails before any request."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text


parser = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog="""examples:
  # a local llama.cpp / vLLM server, 16 requests at a time
  python gen_triplets.py --input captions.jsonl --out triplets.jsonl \\
      --base-url http://127.0.0.1:8000/v1 --model smollm2 --concurrency 16
  # a hosted API (key in $OPENAI_API_KEY), back-translation through French, pairs checked by a second model
  python gen_triplets.py --input captions.csv --out triplets.jsonl --base-url https://api.example.com/v1 \\
      --model big --paraphrase back-translate --pivot fr --verify --verify-model bigger
  # COCO captions: each triplet also gets a true negation of an object the image's labels rule out
  python gen_triplets.py --input coco_captions.jsonl --out triplets.jsonl \\
      --base-url http://127.0.0.1:8000/v1 --model M --true-negations \\
      --coco-instances annotations/instances_train2017.json
  # try the prompts on 20 captions first; rerun the same command later to resume
  python gen_triplets.py --input captions.jsonl --out t.jsonl --base-url http://127.0.0.1:8000/v1 --model M --limit 20

input: JSONL lines {"image", "caption", "id" (optional: the line number), "objects" (optional: the
image's labels)} or a .csv file with those columns (objects separated by ";").
output: one triplet a line, {"image", "caption", "paraphrase", "negation", "id", "paraphrase_method"}
(+ "true_negation", "absent_object", "absent_source"); failed captions in OUT.rejects.jsonl, with a "reason".
exit status: 0 all done; 1 bad input, or a server that refuses us (URL, model, key) or cannot be reached;
3 done but some captions rejected (0 with --allow-rejects); 130 interrupted.""",
)
parser.add_argument("--input", required=True, type=Path, help="captions, .jsonl or .csv")
parser.add_argument("--out", required=True, type=Path, help="triplets .jsonl, appended to")
parser.add_argument("--base-url", required=True, type=http_url, help="e.g. http://127.0.0.1:8000/v1")
parser.add_argument("--model", required=True, help="model name the server knows")
parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                    help="environment variable holding the API key; unset = no key (default %(default)s)")
parser.add_argument("--paraphrase", choices=["rephrase", "back-translate"], default="rephrase",
                    help="rephrase directly, or translate to --pivot and back (default %(default)s)")
parser.add_argument("--pivot", choices=sorted(PIVOT_LANGUAGES), default="de",
                    help="pivot language for back-translation (default %(default)s)")
parser.add_argument("--verify", action="store_true", help="ask again whether each answer is right; regenerate when not")
parser.add_argument("--verify-model", help="model for --verify (default: --model)")
parser.add_argument("--regenerate", type=non_negative_int, default=2,
                    help="extra tries for a caption whose answer is unusable or fails --verify (default %(default)s)")
parser.add_argument("--concurrency", type=count, default=8, help="requests in flight (default %(default)s)")
parser.add_argument("--timeout", type=positive, default=120.0,
                    help="seconds to wait for the server to connect or send (default %(default)s)")
parser.add_argument("--max-retries", type=non_negative_int, default=6,
                    help="retries of one request on 429/5xx/timeout/connection errors (default %(default)s)")
parser.add_argument("--backoff-base", type=non_negative, default=1.0,
                    help="first retry waits about this many seconds, doubling each time (default %(default)s)")
parser.add_argument("--backoff-max", type=non_negative, default=60.0,
                    help="longest wait between retries (default %(default)s)")
parser.add_argument("--temperature", type=non_negative, default=0.7, help="sampling temperature (default %(default)s)")
parser.add_argument("--max-tokens", type=count, default=256, help="answer length cap (default %(default)s)")
parser.add_argument("--limit", type=non_negative_int, help="process at most this many new captions (a dry run)")
parser.add_argument("--retry-rejects", action="store_true",
                    help="empty the rejects file first, so its captions are tried again")
parser.add_argument("--allow-rejects", action="store_true", help="exit 0 even if some captions were rejected")
parser.add_argument("--fsync", action="store_true", help="fsync after every line (survives power loss, slower)")
parser.add_argument("--progress-every", type=non_negative, default=10.0,
                    help="seconds between progress lines, 0 for none (default %(default)s)")
truth = parser.add_argument_group("true negations (for train.py --loss semclip_tn)")
truth.add_argument("--true-negations", action="store_true",
                   help="add a true_negation: the caption plus the denial of an object absent from the image")
truth.add_argument("--coco-instances", type=Path,
                   help="COCO instances_*.json: each image's labels, by file name (default: each record's objects)")
truth.add_argument("--vocab", type=Path, help="the objects an absent one is picked from, one a line "
                   "(default: the --coco-instances categories, else assets/coco_categories.txt)")
truth.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the absent-object draw (default %(default)s)")


# -----------------------------------------------------------------------------
# Files: captions in; triplets and rejects out, as append-only JSONL logs that survive a crash

def json_records(path, lines):
    """(line number, object) for each non-blank line of a JSONL file; any other line stops the run."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise DataError(f"{path}: line {number}: not valid JSON ({error}); fix or remove the line") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object with image and caption")
        yield number, record


def check_record(path, line, record, first_line):
    """Image, caption and a unique id (the line number by default), since resuming goes by id."""
    for key in ("image", "caption"):
        if not isinstance(record.get(key), str):
            raise DataError(f'{path}: line {line}: no "{key}" text; each record needs "image" and "caption"')
    if not record["caption"].strip():
        raise DataError(f"{path}: line {line}: empty caption; fill it in or remove the line")
    objects = record.get("objects", [])
    if not isinstance(objects, list) or not all(isinstance(name, str) and name.strip() for name in objects):
        raise DataError(f'{path}: line {line}: "objects" must be a list of object names, e.g. ["dog", "sofa"]')
    if record.get("id") in (None, ""):
        record["id"] = line
    key = str(record["id"])
    if key in first_line:
        raise DataError(f"{path}: line {line}: id {key} was already used on line {first_line[key]}; ids must be unique")
    first_line[key] = line
    return record


def read_captions(path):
    """(caption records, {id: line}) from JSONL or CSV, checked up front so a bad line fails before any request."""
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
    except OSError as error:
        raise DataError(f"{path}: cannot read it ({error.strerror}); check --input") from None
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(f"{path}: line {line}: not UTF-8 (byte 0x{data[error.start]:02x}); "
                        "save the file as UTF-8") from None
    records, first_line = [], {}
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        try:
            header = reader.fieldnames or []
            missing = [key for key in ("image", "caption") if key not in header]
            if missing:
                raise DataError(f"{path}: line 1: no {' or '.join(missing)} column (header: "
                                f"{','.join(header)!r}); the header needs image,caption[,id]")
            for row in reader:
                if None in row or None in row.values():
                    raise DataError(f"{path}: line {reader.line_num}: expected {len(header)} fields like "
                                    "the header; quote fields that contain commas")
                if "objects" in row:  # names separated by ";"
                    row["objects"] = [name.strip() for name in row["objects"].split(";") if name.strip()]
                records.append(check_record(path, reader.line_num, row, first_line))
        except csv.Error as error:
            raise DataError(f"{path}: line {reader.line_num + 1}: bad CSV ({error}); fix the quoting "
                            "of the record that starts there") from None
    else:
        for line, record in json_records(path, text.split("\n")):
            records.append(check_record(path, line, record, first_line))
    if not records:
        raise DataError(f"{path}: no captions in it; check --input")
    return records, first_line


def open_log(path, fsync, redact, needs=()):
    """Open a JSONL log for appending; return (write_line, ids already in it). A run killed
    mid-write leaves at worst a torn last line: it is cut off here and its caption is redone.
    Each line must have the keys in `needs`, so that a resumed run never mixes two kinds of output."""
    ids = set()
    if path.exists():
        data = path.read_bytes()
        keep = data[:data.rfind(b"\n") + 1]  # a last line without its newline is torn
        lines = keep.split(b"\n")[:-1]
        if lines and lines[-1].strip():
            try:
                json.loads(lines[-1])
            except ValueError:  # a last line that does not parse is torn too
                keep = keep[:len(keep) - len(lines.pop()) - 1]
        if len(keep) < len(data):
            print(f"gen_triplets: {path}: line {len(lines) + 1} was cut short by an interrupted run; "
                  "removed it (its caption will be redone)", file=sys.stderr)
            os.truncate(path, len(keep))
        for number, record in json_records(path, lines):
            if "id" not in record:
                raise DataError(f'{path}: line {number}: no "id"; is this file an output of gen_triplets.py?')
            missing = [key for key in needs if key not in record]
            if missing:
                raise DataError(f"{path}: line {number}: no {', '.join(missing)}: written by a run without "
                                "--true-negations; give another --out")
            ids.add(str(record["id"]))
    logs = []  # opened at the first line, so that a run which stops before any answer writes nothing

    def write_line(record):
        if not logs:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                logs.append(open(path, "ab", buffering=0))
            except OSError as error:
                raise DataError(f"{path}: cannot write it ({error.strerror}); check --out") from None
        data = (redact(json.dumps(record, ensure_ascii=False)) + "\n").encode("utf-8")
        while data:
            data = data[logs[0].write(data):]
        if fsync:
            os.fsync(logs[0].fileno())

    return write_line, ids


# -----------------------------------------------------------------------------
# One caption -> one triplet

def clean_text(value, name, caption):
    """A generated sentence on one line, checked, since small models return all sorts."""
    if not isinstance(value, str):
        raise BadAnswer(f"{name} is not text: {snippet(json.dumps(value), 80)}")
    text = " ".join(value.strip().strip("\"'").split())
    if not words(text):
        raise BadAnswer(f"{name} is empty")
    if words(text) == words(caption):
        raise BadAnswer(f"{name} repeats the caption")
    if words(text) in (words(EXAMPLE_PARAPHRASE), words(EXAMPLE_NEGATION), words(EXAMPLE_TRUE_NEGATION)):
        raise BadAnswer(f"{name} copies the prompt's example")  # small models do
    if not len(caption) // 4 <= len(text) <= 3 * len(caption) + 50:
        raise BadAnswer(f"{name} has {len(text)} characters for a caption of {len(caption)}")
    return text


def make_pair(client, args, caption):
    """(paraphrase, negation) for one caption, by the chosen method, checked."""
    if args.paraphrase == "rephrase":
        answer = client.ask(args.model, TRIPLET_PROMPT, caption, ("paraphrase", "negation"))
        paraphrase = answer["paraphrase"]
    else:
        translate = TRANSLATE_PROMPT.format(language=PIVOT_LANGUAGES[args.pivot])
        pivot = client.ask(args.model, translate, caption, ("translation",))["translation"]
        pivot = clean_text(pivot, f"translation to {args.pivot}", caption)
        english = TRANSLATE_PROMPT.format(language="English")
        paraphrase = client.ask(args.model, english, pivot, ("translation",))["translation"]
        answer = client.ask(args.model, NEGATION_PROMPT, caption, ("negation",))
    paraphrase = clean_text(paraphrase, "paraphrase", caption)
    negation = clean_text(answer["negation"], "negation", caption)
    if words(paraphrase) == words(negation):
        raise BadAnswer("paraphrase and negation are the same")
    if args.verify:
        verify(client, args, VERIFY_PROMPT, {"caption": caption, "paraphrase": paraphrase, "negation": negation},
               ("paraphrase_ok", "negation_ok"))
    return paraphrase, negation


def make_true_negation(client, args, caption, absent_object):
    """(absent object, true negation) for one caption: the LLM denies the object the labels rule out,
    or, with absent_object None (no labels), names one itself; absent_objects.py checks the sentence."""
    if absent_object is None:
        answer = client.ask(args.model, PROPOSE_ABSENT_PROMPT, json.dumps({"caption": caption}, ensure_ascii=False),
                            ("absent_object", "true_negation"))
        problem = absent_objects.proposal_problem(answer["absent_object"], caption)
        if problem:
            raise BadAnswer(problem)
        absent_object = absent_objects.normal_name(answer["absent_object"])
    else:
        given = json.dumps({"caption": caption, "absent_object": absent_object}, ensure_ascii=False)
        answer = client.ask(args.model, TRUE_NEGATION_PROMPT, given, ("true_negation",))
    sentence = clean_text(answer["true_negation"], "true_negation", caption)
    problem = absent_objects.denial_problem(sentence, caption, absent_object)
    if problem:
        raise BadAnswer(problem)
    if args.verify:
        verify(client, args, VERIFY_TRUE_NEGATION_PROMPT,
               {"caption": caption, "absent_object": absent_object, "true_negation": sentence}, ("true_negation_ok",))
    return absent_object, sentence


def verify(client, args, prompt, data, keys):
    """--verify: the verifier model answers true/false for each key; any false means generate again."""
    verdict = client.ask(args.verify_model or args.model, prompt, json.dumps(data, ensure_ascii=False), keys)
    failed = [key for key, value in verdict.items() if str(value).strip().lower() not in ("true", "yes")]
    if failed:
        raise BadAnswer(f"verifier says not {' and not '.join(failed)}")


def make_triplet(client, args, record, absent):
    """("out", triplet) or ("reject", record with reason); StopRun stops the whole run, Abandoned leaves the
    caption undone. `absent`: the AbsentObjects of --true-negations, else None."""
    source, target = absent.pick(record) if absent else (None, None)
    if source == "labels" and target is None:
        return "reject", reject_line(record, ["no object of the vocabulary is surely absent: each is among the "
                                              "image's labels or named by the caption; give a larger --vocab"])
    problems, denial = [], None
    try:
        pair = regenerated(client, args, problems, make_pair, record["caption"])
        if pair and source:
            denial = regenerated(client, args, problems, make_true_negation, record["caption"], target)
    except RequestFailed as error:
        problems.append(str(error))
        pair = None
    if not pair or source and not denial:
        return "reject", reject_line(record, problems)
    method = "rephrase" if args.paraphrase == "rephrase" else f"back-translate:{args.pivot}"
    triplet = {**record, "paraphrase": pair[0], "negation": pair[1], "paraphrase_method": method}
    if source:
        triplet.update(true_negation=denial[1], absent_object=denial[0], absent_source=source)
    return "out", triplet


def regenerated(client, args, problems, make, *inputs):
    """make(client, args, *inputs) until its answer is usable, in 1 + --regenerate tries; None when none was."""
    for attempt in range(1 + args.regenerate):
        if attempt:
            client.count("regenerated")
        try:
            return make(client, args, *inputs)
        except BadAnswer as error:
            problems.append(str(error))
    return None


def reject_line(record, problems):
    reason = "; ".join(f"try {number}: {problem}" for number, problem in enumerate(problems, start=1))
    return {"id": record["id"], "image": record["image"], "caption": record["caption"], "reason": reason}


# -----------------------------------------------------------------------------
# The run

def main(argv=None):
    args = parser.parse_args(argv)
    if (args.coco_instances or args.vocab) and not args.true_negations:
        parser.error("--coco-instances and --vocab choose the absent objects of --true-negations; add that flag")
    api_key = os.environ.get(args.api_key_env) or None

    def redact(text):
        """Blank out the API key, should a server ever echo it back."""
        return text.replace(api_key, "[api key]") if api_key else text

    def say(message, stream=sys.stderr):
        print(redact(f"gen_triplets: {message}"), file=stream, flush=True)

    client = Client(args, api_key)
    pool = ThreadPoolExecutor(args.concurrency)
    accepted = rejected = 0
    try:
        records, line_of = read_captions(args.input)
        absent = (absent_objects.for_captions(records, args.input, line_of, args.coco_instances, args.vocab,
                                              args.seed) if args.true_negations else None)
        rejects_path = args.out.with_name(args.out.name + ".rejects.jsonl")
        if args.retry_rejects and rejects_path.exists():
            rejects_path.write_bytes(b"")
        write_out, done_ids = open_log(args.out, args.fsync, redact,
                                       needs=("true_negation", "absent_object") if absent else ())
        write_reject, rejected_ids = open_log(rejects_path, args.fsync, redact)
        finished_before = done_ids | rejected_ids
        todo = [record for record in records if str(record["id"]) not in finished_before][:args.limit]
        if todo:
            client.check_reachable()
        labelled = f" ({sum(found is not None for found in absent.labels.values())} with labels)" if absent else ""
        say(f"{len(records)} captions{labelled}, {len(done_ids)} done and {len(rejected_ids)} rejected before, "
            f"{len(todo)} to do now", sys.stdout)  # stderr is for progress and the one line of a failure
        start = last_progress = time.monotonic()
        waiting, in_flight, stop = iter(todo), set(), None
        while True:
            for record in () if stop else waiting:
                in_flight.add(pool.submit(make_triplet, client, args, record, absent))
                if len(in_flight) >= 2 * args.concurrency:
                    break
            if not in_flight:
                break
            finished, in_flight = wait(in_flight, timeout=args.progress_every or None, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    kind, line = future.result()
                except Abandoned:
                    continue
                except StopRun as error:  # the answers in flight are still written; the rest stay undone
                    stop = stop or error
                    client.stopping.set()
                    continue
                if kind == "out":
                    write_out(line)
                    accepted += 1
                else:
                    write_reject(line)
                    rejected += 1
            now = time.monotonic()
            if args.progress_every and now - last_progress >= args.progress_every:
                last_progress = now
                done = accepted + rejected
                rate = done / (now - start)
                eta = timedelta(seconds=round((len(todo) - done) / rate)) if rate else "?"
                say(f"{done}/{len(todo)} ({100 * done // len(todo)}%), {rate:.1f} captions/s, ETA {eta}, "
                    f"{rejected} rejected, {client.retries} retries, {client.regenerated} regenerated")
        if stop:
            raise stop
    except (StopRun, DataError) as error:
        client.stopping.set()
        pool.shutdown(cancel_futures=True)
        say(error)
        return 1
    except KeyboardInterrupt:
        say(f"interrupted after {accepted + rejected} captions; rerun the same command to resume")
        os._exit(130)  # do not wait for the requests in flight; every written line is complete
    pool.shutdown()

    elapsed = time.monotonic() - start
    rejects_total = len(rejected_ids) + rejected
    say(f"this run: {accepted} done, {rejected} rejected in {elapsed:.1f} s "
        f"({(accepted + rejected) / max(elapsed, 1e-9):.1f} captions/s); {client.retries} requests retried, "
        f"{client.regenerated} answers regenerated, {client.tokens} tokens used", sys.stdout)
    say(f"in total {len(done_ids) + accepted} triplets in {args.out}, {rejects_total} rejects in {rejects_path}"
        f"{' (see their reason; --retry-rejects tries them again)' if rejects_total else ''}", sys.stdout)
    return 3 if rejects_total and not args.allow_rejects else 0


if __name__ == "__main__":
    sys.exit(main())
