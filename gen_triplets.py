"""
Captions in, SemCLIP triplets out: (caption, paraphrase, negation) made by an LLM behind any
OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, ollama, a hosted API).

Why it is built the way it is:
- 200k+ captions: requests run concurrently (threads), each retried with exponential backoff
  and jitter on 429 / 5xx / timeouts / dropped connections, honouring Retry-After.
- Lose nothing: every caption ends as exactly one line in the output or in <out>.rejects.jsonl
  (with the reason). Each line is one write(), so a run killed at any moment (even kill -9) loses
  at most the requests in flight; rerunning the same command does only the captions not yet done.
- Standard library only, so it starts fast and runs wherever Python does.
- The API key is read from an environment variable and never printed or written.
"""

import argparse
import csv
import email.utils
import http.client
import io
import json
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import timedelta
from pathlib import Path

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


def json_task(rules, example_answer):
    """A system prompt that asks for one JSON object with the given rules, plus one example."""
    rules = "\n".join(rules)
    return ("You write training data for an image-text model. The user gives you one image caption.\n"
            f"Answer with a JSON object only, with these keys:\n{rules}\n\n"
            f"Example caption: {EXAMPLE_CAPTION}\nExample answer: {json.dumps(example_answer)}")


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

# -----------------------------------------------------------------------------
# Command line

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
  # try the prompts on 20 captions first; rerun the same command later to resume
  python gen_triplets.py --input captions.jsonl --out triplets.jsonl --base-url URL --model M --limit 20

input: JSONL lines {"image": ..., "caption": ..., "id": ...} (id optional: the line number
by default) or a .csv file with those columns.
output: one triplet a line, {"image", "caption", "paraphrase", "negation", "id",
"paraphrase_method"}; captions that failed go to OUT.rejects.jsonl with a "reason".
exit status: 0 all done, 1 bad input or a server that refuses us (bad URL, model or key),
3 finished but some captions are in the rejects file (0 with --allow-rejects), 130 interrupted.""",
)
parser.add_argument("--input", required=True, type=Path, help="captions, .jsonl or .csv")
parser.add_argument("--out", required=True, type=Path, help="triplets .jsonl, appended to")
parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
parser.add_argument("--model", required=True, help="model name the server knows")
parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                    help="environment variable holding the API key; unset = no key (default %(default)s)")
parser.add_argument("--paraphrase", choices=["rephrase", "back-translate"], default="rephrase",
                    help="rephrase directly, or translate to --pivot and back (default %(default)s)")
parser.add_argument("--pivot", choices=sorted(PIVOT_LANGUAGES), default="de",
                    help="pivot language for back-translation (default %(default)s)")
parser.add_argument("--verify", action="store_true", help="ask again whether the pair is right; regenerate when not")
parser.add_argument("--verify-model", help="model for --verify (default: --model)")
parser.add_argument("--regenerate", type=int, default=2,
                    help="extra tries for a caption whose answer is unusable or fails --verify (default %(default)s)")
parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default %(default)s)")
parser.add_argument("--timeout", type=float, default=120.0,
                    help="seconds to wait for the server to connect or send (default %(default)s)")
parser.add_argument("--max-retries", type=int, default=6,
                    help="retries of one request on 429/5xx/timeout/connection errors (default %(default)s)")
parser.add_argument("--backoff-base", type=float, default=1.0,
                    help="first retry waits about this many seconds, doubling each time (default %(default)s)")
parser.add_argument("--backoff-max", type=float, default=60.0, help="longest wait between retries (default %(default)s)")
parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default %(default)s)")
parser.add_argument("--max-tokens", type=int, default=256, help="answer length cap (default %(default)s)")
parser.add_argument("--limit", type=int, help="process at most this many new captions (a dry run)")
parser.add_argument("--retry-rejects", action="store_true", help="empty the rejects file first, so its captions are tried again")
parser.add_argument("--allow-rejects", action="store_true", help="exit 0 even if some captions were rejected")
parser.add_argument("--fsync", action="store_true", help="fsync after every line (survives power loss, slower)")
parser.add_argument("--progress-every", type=float, default=10.0, help="seconds between progress lines (default %(default)s)")


class StopRun(Exception):
    """Bad input, or a server that refuses every request: one clear line on stderr, exit status 1."""


class RequestFailed(Exception):
    """One request failed for good (retries spent, or the server rejected it): reject the caption."""


class BadAnswer(Exception):
    """The model's answer is unusable: ask again, up to --regenerate times."""


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
            raise StopRun(f"{path}: line {number}: not valid JSON ({error}); fix or remove the line") from None
        if not isinstance(record, dict):
            raise StopRun(f"{path}: line {number}: expected a JSON object with image and caption")
        yield number, record


def check_record(path, line, record, first_line):
    """Image, caption and a unique id (the line number by default), since resuming goes by id."""
    for key in ("image", "caption"):
        if not isinstance(record.get(key), str):
            raise StopRun(f'{path}: line {line}: no "{key}" text; each record needs "image" and "caption"')
    if not record["caption"].strip():
        raise StopRun(f"{path}: line {line}: empty caption; fill it in or remove the line")
    if record.get("id") in (None, ""):
        record["id"] = line
    key = str(record["id"])
    if key in first_line:
        raise StopRun(f"{path}: line {line}: id {key} was already used on line {first_line[key]}; ids must be unique")
    first_line[key] = line
    return record


def read_captions(path):
    """Caption records from JSONL or CSV, checked up front so a bad line fails before any request."""
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
    except OSError as error:
        raise StopRun(f"{path}: cannot read it ({error.strerror}); check --input") from None
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise StopRun(f"{path}: line {line}: not UTF-8 (byte 0x{data[error.start]:02x}); "
                      "save the file as UTF-8") from None
    records, first_line = [], {}
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        try:
            header = reader.fieldnames or []
            missing = [key for key in ("image", "caption") if key not in header]
            if missing:
                raise StopRun(f"{path}: line 1: no {' or '.join(missing)} column (header: "
                              f"{','.join(header)!r}); the header needs image,caption[,id]")
            for row in reader:
                if None in row or None in row.values():
                    raise StopRun(f"{path}: line {reader.line_num}: expected {len(header)} fields like "
                                  "the header; quote fields that contain commas")
                records.append(check_record(path, reader.line_num, row, first_line))
        except csv.Error as error:
            raise StopRun(f"{path}: line {reader.line_num + 1}: bad CSV ({error}); fix the quoting "
                          "of the record that starts there") from None
    else:
        for line, record in json_records(path, text.split("\n")):
            records.append(check_record(path, line, record, first_line))
    if not records:
        raise StopRun(f"{path}: no captions in it; check --input")
    return records


def open_log(path, fsync, redact):
    """Open a JSONL log for appending; return (write_line, ids already in it). A run killed
    mid-write leaves at worst a torn last line: it is cut off here and its caption is redone."""
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
                raise StopRun(f'{path}: line {number}: no "id"; is this file an output of gen_triplets.py?')
            ids.add(str(record["id"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "ab", buffering=0)

    def write_line(record):
        data = (redact(json.dumps(record, ensure_ascii=False)) + "\n").encode("utf-8")
        while data:
            data = data[log.write(data):]
        if fsync:
            os.fsync(log.fileno())

    return write_line, ids


# -----------------------------------------------------------------------------
# The chat-completions client: retries, backoff, JSON mode with fallback, usage counting

class Client:
    """POST {base}/chat/completions with urllib; shared by all worker threads."""

    def __init__(self, args, api_key):
        self.url = args.base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.args = args
        self.json_mode = True  # response_format json_object until the server refuses it
        self.lock = threading.Lock()
        self.retries = self.tokens = self.regenerated = 0

    def count(self, name, amount=1):
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)

    def post(self, body):
        """(status, headers, body bytes); transport errors propagate as OSError / HTTPException."""
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=self.args.timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.headers, error.read()

    def chat(self, model, system, user):
        """The assistant's text for one exchange, retrying what a flaky server may get wrong."""
        payload = {"model": model, "temperature": self.args.temperature, "max_tokens": self.args.max_tokens,
                   "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
        use_json, attempt = self.json_mode, 0
        while True:
            body = dict(payload, response_format={"type": "json_object"}) if use_json else payload
            retry_after = 0.0
            try:
                status, headers, raw = self.post(body)
            except (OSError, http.client.HTTPException) as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if status == 200:
                    try:
                        reply = json.loads(raw)
                        content = reply["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        problem = f"not a chat completion: {snippet(raw)}"
                    else:
                        usage = reply.get("usage") or {}
                        self.count("tokens", usage.get("total_tokens") or 0)
                        if self.json_mode and not use_json:
                            self.json_mode = False
                            print("gen_triplets: the server refuses response_format json_object; "
                                  "asking without it", file=sys.stderr)
                        return content or ""
                elif use_json and (status in (400, 422) or b"response_format" in raw):
                    use_json = False  # this server refuses JSON mode: ask again without it
                    continue
                elif status in (401, 403):
                    raise StopRun(f"HTTP {status} from {self.url}: the server refuses the API key; put a valid "
                                  f"key in ${self.args.api_key_env} (or name another variable with --api-key-env)")
                elif status == 404:
                    raise StopRun(f"HTTP 404 from {self.url}: check --base-url (most servers want "
                                  f"it to end in /v1) and --model ({model}); {snippet(raw)}")
                elif status in (408, 409, 425, 429) or status >= 500:
                    problem = f"HTTP {status}: {snippet(raw)}"
                    retry_after = parse_retry_after(headers.get("Retry-After"))
                else:
                    raise RequestFailed(f"HTTP {status}: {snippet(raw)}")
            if attempt >= self.args.max_retries:
                raise RequestFailed(f"{problem} (after {attempt + 1} tries)")
            self.count("retries")
            delay = min(self.args.backoff_max, self.args.backoff_base * 2 ** attempt)
            time.sleep(max(retry_after, delay * random.uniform(0.5, 1.0)))  # jitter, yet honour Retry-After
            attempt += 1

    def ask(self, model, system, user, keys):
        """Chat, then pull the given keys out of the JSON object in the answer."""
        answer = parse_json_object(self.chat(model, system, user))
        answer = {key.lower().strip(): value for key, value in answer.items()}
        missing = [key for key in keys if key not in answer]
        if missing:
            raise BadAnswer(f"answer lacks {', '.join(missing)} (has {', '.join(answer) or 'no keys'})")
        return {key: answer[key] for key in keys}


def snippet(raw, size=200):
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:size]


def parse_retry_after(value):
    """Retry-After as seconds: a number, or an HTTP date; 0 when absent or unreadable."""
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return 0.0


def parse_json_object(text):
    """The first JSON object in an answer, wherever it sits: bare, in a code fence, amid prose.
    strict=False accepts raw newlines inside strings, which small models often emit."""
    decoder = json.JSONDecoder(strict=False)
    for match in re.finditer(r"\{", text):
        try:
            return decoder.raw_decode(text, match.start())[0]  # it starts at "{", so it is an object
        except ValueError:
            continue
    raise BadAnswer(f"no JSON object in the answer: {snippet(text, 120)!r}")


# -----------------------------------------------------------------------------
# One caption -> one triplet

def words(text):
    return re.findall(r"\w+", text.lower())


def clean_text(value, name, caption):
    """A generated sentence on one line, checked, since small models return all sorts."""
    if not isinstance(value, str):
        raise BadAnswer(f"{name} is not text: {snippet(json.dumps(value), 80)}")
    text = " ".join(value.strip().strip("\"'").split())
    if not words(text):
        raise BadAnswer(f"{name} is empty")
    if words(text) == words(caption):
        raise BadAnswer(f"{name} repeats the caption")
    if words(text) in (words(EXAMPLE_PARAPHRASE), words(EXAMPLE_NEGATION)):
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
        triplet = json.dumps({"caption": caption, "paraphrase": paraphrase, "negation": negation}, ensure_ascii=False)
        verdict = client.ask(args.verify_model or args.model, VERIFY_PROMPT, triplet, ("paraphrase_ok", "negation_ok"))
        failed = [key for key, value in verdict.items() if str(value).strip().lower() not in ("true", "yes")]
        if failed:
            raise BadAnswer(f"verifier says not {' and not '.join(failed)}")
    return paraphrase, negation


def make_triplet(client, args, record):
    """("out", triplet) or ("reject", record with reason); StopRun stops the whole run."""
    problems = []
    for attempt in range(1 + args.regenerate):
        if attempt:
            client.count("regenerated")
        try:
            paraphrase, negation = make_pair(client, args, record["caption"])
            method = "rephrase" if args.paraphrase == "rephrase" else f"back-translate:{args.pivot}"
            return "out", {**record, "paraphrase": paraphrase, "negation": negation, "paraphrase_method": method}
        except BadAnswer as error:
            problems.append(str(error))
        except RequestFailed as error:
            problems.append(str(error))
            break
    reason = "; ".join(f"try {number}: {problem}" for number, problem in enumerate(problems, start=1))
    return "reject", {"id": record["id"], "image": record["image"], "caption": record["caption"], "reason": reason}


# -----------------------------------------------------------------------------
# The run

def main(argv=None):
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.timeout <= 0 or min(args.regenerate, args.max_retries, args.limit or 0) < 0:
        parser.error("--concurrency and --timeout must be positive, --regenerate, --max-retries and --limit >= 0")
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
        records = read_captions(args.input)
        rejects_path = args.out.with_name(args.out.name + ".rejects.jsonl")
        if args.retry_rejects and rejects_path.exists():
            rejects_path.write_bytes(b"")
        write_out, done_ids = open_log(args.out, args.fsync, redact)
        write_reject, rejected_ids = open_log(rejects_path, args.fsync, redact)
        finished_before = done_ids | rejected_ids
        todo = [record for record in records if str(record["id"]) not in finished_before][:args.limit]
        say(f"{len(records)} captions, {len(done_ids)} done and {len(rejected_ids)} rejected before, "
            f"{len(todo)} to do now")
        start = last_progress = time.monotonic()
        waiting, in_flight = iter(todo), set()
        while True:
            for record in waiting:
                in_flight.add(pool.submit(make_triplet, client, args, record))
                if len(in_flight) >= 2 * args.concurrency:
                    break
            if not in_flight:
                break
            finished, in_flight = wait(in_flight, timeout=args.progress_every or None, return_when=FIRST_COMPLETED)
            for future in finished:
                kind, line = future.result()
                if kind == "out":
                    write_out(line)
                    accepted += 1
                else:
                    write_reject(line)
                    rejected += 1
            now = time.monotonic()
            if args.progress_every and now - last_progress >= args.progress_every:
                last_progress = now
                count = accepted + rejected
                rate = count / (now - start)
                eta = timedelta(seconds=round((len(todo) - count) / rate)) if rate else "?"
                say(f"{count}/{len(todo)} ({100 * count // len(todo)}%), {rate:.1f} captions/s, ETA {eta}, "
                    f"{rejected} rejected, {client.retries} retries, {client.regenerated} regenerated")
    except StopRun as error:
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
