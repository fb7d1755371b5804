"""
llm_client.py: the JSON object is found in whatever a model writes; Retry-After is read; and a server
that cannot be reached stops the run (at once when it never answered, after the retries when it
went away) instead of failing the request, so that no caption is rejected for an outage.
"""

import email.utils
import sys
import threading
import time
from argparse import Namespace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llm_client  # noqa: E402
from fake_llm_server import FakeLLM, closed_port  # noqa: E402


def client(url, **settings):
    """A Client with quick retries, as gen_triplets.py builds it from its flags."""
    args = Namespace(base_url=url, api_key_env="OPENAI_API_KEY", timeout=2.0, max_retries=3, backoff_base=0.01,
                     backoff_max=0.05, temperature=0.0, max_tokens=16)
    return llm_client.Client(Namespace(**{**vars(args), **settings}), api_key=None)


# -----------------------------------------------------------------------------
# A server that cannot be reached is not a failed request

def test_a_server_that_never_answered_and_cannot_be_reached_stops_the_run_at_once():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    start = time.monotonic()
    with pytest.raises(llm_client.StopRun) as stop:
        client(url, backoff_base=30.0).chat("m", "system", "a caption")
    assert time.monotonic() - start < 5, "no retries, no backoff"
    assert str(stop.value) == (f"cannot reach {url}/chat/completions: connection refused; is the server running? "
                               "(check --base-url)")


def test_the_check_before_the_run_connects_directly_but_not_past_a_proxy(monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(llm_client.StopRun, match=f"cannot reach {url}/chat/completions: connection refused"):
        client(url).check_reachable()
    with FakeLLM() as fake:
        assert client(fake.url).check_reachable() is None
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert client(url).check_reachable() is None, "the proxy answers for the server: the requests will tell"


def test_a_server_that_goes_away_midway_stops_the_run_after_the_retries_instead_of_failing_the_request():
    with FakeLLM() as fake:
        talking = client(fake.url)
        assert talking.chat("m", "system", "a caption")
    with pytest.raises(llm_client.StopRun, match=r"lost .*: cannot connect: connection refused after 4 tries; "
                                                 r"is the server still running\? Rerun the same command"):
        talking.chat("m", "system", "a caption")
    assert talking.retries == 3


def test_a_last_try_cut_off_by_a_server_going_away_stops_the_run_and_one_cut_off_by_a_live_server_fails():
    with FakeLLM(plan={"a caption": ["ok", "drop"]}) as fake:
        talking = client(fake.url, max_retries=0)
        assert talking.chat("m", "system", "a caption")
        with pytest.raises(llm_client.RequestFailed, match="RemoteDisconnected"):
            talking.chat("m", "system", "a caption")
    fake = FakeLLM(plan={"a caption": ["ok", "drop"]}, delay=1.0)
    going, outcome = client(fake.url, max_retries=0), []
    assert going.chat("m", "system", "a caption")

    def ask():
        try:
            going.chat("m", "system", "a caption")
        except llm_client.StopRun as stop:
            outcome.append(str(stop))

    worker = threading.Thread(target=ask)
    worker.start()
    while len(fake.requests) < 2:
        time.sleep(0.01)
    fake.close()  # while the server holds the request, which it then drops
    worker.join(10)
    assert len(outcome) == 1 and "cannot connect: connection refused after 1 tries" in outcome[0]


def test_a_stopping_run_abandons_a_request_waiting_to_retry():
    with FakeLLM(plan={"a caption": ["503"] * 5}) as fake:
        waiting, outcome = client(fake.url, backoff_base=30.0, backoff_max=30.0), []

        def ask():
            try:
                waiting.chat("m", "system", "a caption")
            except llm_client.Abandoned:
                outcome.append("abandoned")

        worker = threading.Thread(target=ask)
        worker.start()
        while not fake.requests:
            time.sleep(0.01)
        start = time.monotonic()
        waiting.stopping.set()
        worker.join(5)
    assert outcome == ["abandoned"] and time.monotonic() - start < 2
    assert len(fake.requests) == 1


# -----------------------------------------------------------------------------
# Parsing answers

@pytest.mark.parametrize("answer", [
    '{"paraphrase": "a", "negation": "b"}',
    '```json\n{"paraphrase": "a", "negation": "b"}\n```',
    'Sure! Here is the JSON: {"paraphrase": "a", "negation": "b"} Hope it helps!',
    'Fill in {paraphrase} and {negation}: {"paraphrase": "a", "negation": "b"}',
])
def test_the_json_object_is_found_bare_in_fences_and_amid_prose(answer):
    assert llm_client.parse_json_object(answer) == {"paraphrase": "a", "negation": "b"}


def test_raw_newlines_inside_strings_are_accepted():
    assert llm_client.parse_json_object('{"paraphrase": "two\nlines"}') == {"paraphrase": "two\nlines"}


def test_an_answer_without_a_json_object_is_a_bad_answer():
    with pytest.raises(llm_client.BadAnswer, match="no JSON object"):
        llm_client.parse_json_object("I cannot help with that {not json}")


def test_retry_after_reads_seconds_and_dates():
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert llm_client.parse_retry_after("3") == 3.0
    assert 55 <= llm_client.parse_retry_after(in_a_minute) <= 60
    assert llm_client.parse_retry_after("soon") == 0.0
