"""
An OpenAI-compatible chat-completions client for many threads at once (vLLM, llama.cpp, ollama, a
hosted API), as gen_triplets.py needs it for 200k+ captions.

- Retries with exponential backoff and jitter on 429 / 5xx / timeouts / dropped connections,
  honouring Retry-After; JSON mode (response_format json_object) with a fallback for servers that
  refuse it; the JSON object found wherever the model put it.
- What fails is told apart: a server that refuses us (bad key, URL or model) stops the run; a
  server that cannot be reached stops it too (at the first request, or when a request's retries
  all fail to connect), leaving its caption undone; only a request that fails otherwise is the
  caption's, which is then rejected.
- Standard library only.
"""

import email.utils
import http.client
import json
import random
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


class StopRun(Exception):
    """A server that refuses us or cannot be reached: one clear line on stderr, exit status 1."""


class Abandoned(Exception):
    """The run is stopping: this caption's request is not made, and the caption is left for the rerun."""


class RequestFailed(Exception):
    """One request failed for good (retries spent, or the server rejected it): reject the caption."""


class BadAnswer(Exception):
    """The model's answer is unusable: ask again, up to --regenerate times."""


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
        self.reached = False  # until the server has answered once, failing to connect stops the run at once
        self.stopping = threading.Event()  # set when the run stops: requests not yet made are abandoned

    def unreachable(self, reason):
        return StopRun(f"cannot reach {self.url}: {reason}; is the server running? (check --base-url)")

    def connect_problem(self):
        """Why a connection to the server's host and port does not open, or None; None behind a proxy too,
        which answers in the server's place."""
        parts = urllib.parse.urlsplit(self.url)
        if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(parts.hostname):
            return None
        try:
            socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                     timeout=self.args.timeout).close()
        except OSError as error:
            return why(error)
        return None

    def check_reachable(self):
        """Connect once before the run starts, so that a server that is not there stops it before anything
        is printed or written."""
        problem = self.connect_problem()
        if problem:
            raise self.unreachable(problem)

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
            if self.stopping.is_set():
                raise Abandoned()
            body = dict(payload, response_format={"type": "json_object"}) if use_json else payload
            retry_after, lost, dropped = 0.0, None, False
            try:
                status, headers, raw = self.post(body)
            except urllib.error.URLError as error:  # urllib's wrapper of what fails before a response: no connection
                lost = why(error.reason)
                if not self.reached:
                    raise self.unreachable(lost) from None
                problem = f"cannot connect: {lost}"
            except (OSError, http.client.HTTPException) as error:  # connected, then timed out or cut off
                problem, dropped = f"{type(error).__name__}: {error}", True
            else:
                self.reached = True
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
                lost = lost or dropped and self.connect_problem()  # a server that is gone cut the last try off
                if lost:  # an outage, not a bad caption: leave it undone
                    raise StopRun(f"lost {self.url}: cannot connect: {lost} after {attempt + 1} tries; is the server "
                                  "still running? Rerun the same command to resume (no caption was rejected for this)")
                raise RequestFailed(f"{problem} (after {attempt + 1} tries)")
            self.count("retries")
            delay = min(self.args.backoff_max, self.args.backoff_base * 2 ** attempt)
            if self.stopping.wait(max(retry_after, delay * random.uniform(0.5, 1.0))):  # jitter, yet honour Retry-After
                raise Abandoned()
            attempt += 1

    def ask(self, model, system, user, keys):
        """Chat, then pull the given keys out of the JSON object in the answer."""
        answer = parse_json_object(self.chat(model, system, user))
        answer = {key.lower().strip(): value for key, value in answer.items()}
        missing = [key for key in keys if key not in answer]
        if missing:
            raise BadAnswer(f"answer lacks {', '.join(missing)} (has {', '.join(answer) or 'no keys'})")
        return {key: answer[key] for key in keys}


def why(error):
    """An OS error's reason in words: "connection refused", "timed out", "name or service not known"."""
    reason = getattr(error, "strerror", None) or str(error)
    return reason[:1].lower() + reason[1:]


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
