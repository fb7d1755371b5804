"""
A fake OpenAI-compatible chat-completions server (standard library only) that injects faults,
for tests/test_gen_triplets.py and bench/bench_gen_triplets.py.

Its good answer is derived from the user message (for gen_triplets.py: the caption, the text to
translate, the triplet to verify, or the JSON {"caption", "absent_object"?} of a true negation) and
carries every key any of those tasks asks for, so one answer serves them all. Faults are planned
per user message (a list, one entry used per request) or drawn at random with a fixed seed.
"""

import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHECKS = ("paraphrase_ok", "negation_ok", "true_negation_ok")  # a verifier's answers
FAULTS = ("429", "500", "503", "slow", "drop", "garbage", "wrong_keys", "fenced", "prose")
PROPOSED_OBJECT = "kite"  # what the fake names as absent when the request gives it no object


def true_negation_request(text):
    """(caption, absent object) of a true negation's request; the object is PROPOSED_OBJECT when not given."""
    asked = json.loads(text) if text.startswith('{"caption"') else {}
    return asked.get("caption", text), asked.get("absent_object", PROPOSED_OBJECT)


def good_answer(text):
    caption, absent_object = true_negation_request(text)
    return {"paraphrase": f"a picture that shows {text}", "negation": f"{text} but without the main thing",
            "translation": f"translated {text}", "absent_object": absent_object,
            "true_negation": f"{caption}, and there is no {absent_object}",
            **dict.fromkeys(CHECKS, True)}


def answer_content(fault, text):
    """The assistant message for a 200 reply."""
    answer = json.dumps(good_answer(text))
    caption, _ = true_negation_request(text)
    if fault == "says_no":
        return json.dumps({**good_answer(text), **dict.fromkeys(CHECKS, False)})
    if fault == "forgets_object":
        return json.dumps({**good_answer(text), "true_negation": f"{caption}, on a sunny day"})
    if fault == "names_present":  # the caption's last word
        present = caption.split()[-1]
        return json.dumps({**good_answer(text), "absent_object": present, "true_negation": f"{caption}, no {present}"})
    if fault == "wrong_keys":
        return json.dumps({"rephrased": text, "opposite": text})
    if fault == "fenced":
        return f"```json\n{answer}\n```"
    if fault == "prose":
        return f"Sure! Here is the JSON you asked for:\n{answer}\nI hope this helps."
    return answer


class FakeLLM:
    """Serve on 127.0.0.1 on a free port; `url` is the base URL (ending in /v1).

    delay: seconds before each answer. plan: {user message: [fault, ...]}. fault_rate: chance
    that an unplanned request gets a random fault. refuse_json_mode: answer 400 to requests
    with response_format. retry_after: the Retry-After header sent with 429. slow_s: how long
    a "slow" fault stalls. Other faults: "401", "echo_auth" (500 whose body repeats the
    Authorization header), "says_no" (a verifier's no to every check), "forgets_object" (a true
    negation that does not deny the object), "names_present" (an absent object the caption names),
    "ok". `requests` records (time, path, body, headers) of each request. port: 0 for a free one,
    or the port of a server that was closed (to bring it back after an outage)."""

    def __init__(self, delay=0.0, plan=None, fault_rate=0.0, seed=0, refuse_json_mode=False,
                 retry_after="0", slow_s=1.0, port=0):
        self.delay, self.plan, self.fault_rate = delay, plan or {}, fault_rate
        self.rng, self.refuse_json_mode = random.Random(seed), refuse_json_mode
        self.retry_after, self.slow_s = retry_after, slow_s
        self.requests, self.lock = [], threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][-1]["content"]
                with fake.lock:
                    fake.requests.append((time.monotonic(), self.path, body, dict(self.headers)))
                    planned = fake.plan.get(text)
                    if planned:
                        fault = planned.pop(0)
                    elif fake.rng.random() < fake.fault_rate:
                        fault = fake.rng.choice(FAULTS)
                    else:
                        fault = "ok"
                time.sleep(fake.delay)
                if fake.refuse_json_mode and "response_format" in body:
                    return self.reply(400, b'{"error": "response_format is not supported"}')
                if fault == "drop":
                    self.close_connection = True
                    return self.connection.close()
                if fault == "slow":
                    time.sleep(fake.slow_s)
                if fault in ("429", "500", "503", "401"):
                    headers = {"Retry-After": fake.retry_after} if fault == "429" else {}
                    return self.reply(int(fault), b'{"error": "injected"}', headers)
                if fault == "echo_auth":
                    return self.reply(500, json.dumps({"error": f"bad auth {self.headers['Authorization']}"}).encode())
                if fault == "garbage":
                    return self.reply(200, b"<html>502 Bad Gateway</html>", {"Content-Type": "text/html"})
                reply = {"id": "fake", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": answer_content(fault, text)}}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
                self.reply(200, json.dumps(reply).encode())

            def reply(self, status, data, headers=None):
                try:
                    self.send_response(status)
                    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout) and closed the connection

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # many clients connect at once; a short backlog stalls them

        self.server = Server(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def closed_port():
    """A port on 127.0.0.1 that nothing listens on (for a server that is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
