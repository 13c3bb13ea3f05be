"""Locust load test for Meterline: chat completions (some streamed) across departments.

Run headless with loadtest/run.sh, or `locust -f loadtest/locustfile.py -H http://127.0.0.1:8080`.
Options (flag or env var): --zipf-s/MET_ZIPF_S, --paraphrase-rate/MET_PARAPHRASE_RATE,
--max-prompt-chars/MET_MAX_PROMPT_CHARS, --stream-ratio/MET_STREAM_RATIO, --model/MET_MODEL,
--user-pool/MET_USER_POOL, --pairs-limit/MET_PAIRS_LIMIT, --negatives-limit/MET_NEGATIVES_LIMIT,
--perturb-limit/MET_PERTURB_LIMIT; data from MET_PROMPTS and MET_PAIRS.

At the end it writes the KPI report (loadtest/kpi.py) next to locust's CSV files (or to
MET_KPI_STEM): hit rates and dollars from the proxy's /metrics, false hits from ground truth.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task
from locust.env import Environment

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kpi  # noqa: E402
from workload import (  # noqa: E402
    DEFAULT_PAIRS,
    DEFAULT_PROMPTS,
    Workload,
    build_catalog,
    describe,
    load_negative_pairs,
    load_paraphrase_items,
    load_prompts,
    perturbed_pairs,
)

# Demo keys of `meterline serve --demo`, weighted roughly by department size.
DEPARTMENT_KEYS = {
    "sk-demo-engineering": 5,
    "sk-demo-sales": 3,
    "sk-demo-marketing": 2,
    "sk-demo-executive": 1,
}


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    env = os.environ.get
    parser.add_argument(
        "--zipf-s",
        type=float,
        default=float(env("MET_ZIPF_S", "1.1")),
        help="Zipf exponent of prompt popularity (0 = uniform)",
    )
    parser.add_argument(
        "--paraphrase-rate",
        type=float,
        default=float(env("MET_PARAPHRASE_RATE", "0.5")),
        help="chance an item with a paraphrase is sent as the paraphrase",
    )
    parser.add_argument(
        "--max-prompt-chars", type=int, default=int(env("MET_MAX_PROMPT_CHARS", "2000"))
    )
    parser.add_argument("--stream-ratio", type=float, default=float(env("MET_STREAM_RATIO", "0.3")))
    parser.add_argument("--model", default=env("MET_MODEL", "gpt-4o-mini"))
    parser.add_argument(
        "--user-pool",
        type=int,
        default=int(env("MET_USER_POOL", "200")),
        help="number of distinct `user` values",
    )
    parser.add_argument(
        "--pairs-limit",
        type=int,
        default=int(env("MET_PAIRS_LIMIT", "1000")),
        help="positive paraphrase pairs mixed into the catalog",
    )
    parser.add_argument(
        "--negatives-limit",
        type=int,
        default=int(env("MET_NEGATIVES_LIMIT", "500")),
        help="negative pairs (same words, other meaning) mixed into the catalog",
    )
    parser.add_argument(
        "--perturb-limit",
        type=int,
        default=int(env("MET_PERTURB_LIMIT", "300")),
        help="prompts mixed in with a meaning-changing perturbation (number, negation)",
    )
    parser.add_argument("--seed", type=int, default=int(env("MET_SEED", "42")))


def build_workload(options: Any) -> Workload:
    prompts_path = Path(os.environ.get("MET_PROMPTS", DEFAULT_PROMPTS))
    pairs_path = Path(os.environ.get("MET_PAIRS", DEFAULT_PAIRS))
    prompts = load_prompts(prompts_path, options.max_prompt_chars)
    pairs = load_paraphrase_items(pairs_path, options.max_prompt_chars, options.pairs_limit)
    negatives = load_negative_pairs(pairs_path, options.max_prompt_chars, options.negatives_limit)
    negatives += perturbed_pairs(prompts, options.perturb_limit, options.seed)
    catalog = build_catalog(prompts, pairs, options.seed, negatives)
    return Workload(catalog, options.zipf_s, options.paraphrase_rate, random.Random(options.seed))


class Run:
    """What the closing report needs: ground truth, latencies, overheads, /metrics before."""

    truth = kpi.GroundTruth()
    latencies_ms: list[float] = []
    overheads_ms: list[float] = []
    requests = 0
    errors = 0
    before: dict[Any, float] = {}

    @classmethod
    def answered(cls, headers: Any, rank: int, answer: str, prompt: str, started: float) -> None:
        cls.requests += 1
        cls.latencies_ms.append((time.perf_counter() - started) * 1000)
        overhead = headers.get("x-meterline-overhead-ms")
        if overhead:
            cls.overheads_ms.append(float(overhead))
        cls.truth.observe(headers.get("x-meterline-cache", ""), rank, answer, prompt)

    @classmethod
    def failed(cls) -> None:
        cls.requests += 1
        cls.errors += 1


def workload_parameters(environment: Environment) -> dict[str, Any]:
    options = environment.parsed_options
    names = ("zipf_s", "paraphrase_rate", "pairs_limit", "negatives_limit", "perturb_limit",
             "stream_ratio", "max_prompt_chars", "model", "user_pool", "seed", "num_users",
             "run_time", "host")
    params = {name: getattr(options, name, None) for name in names}
    if ChatUser.workload is not None:
        params["catalog"] = describe(ChatUser.workload)
    return params


@events.test_start.add_listener
def on_test_start(environment: Environment, **_: Any) -> None:
    ChatUser.workload = build_workload(environment.parsed_options)
    print(f"[meterline loadtest] workload: {describe(ChatUser.workload)}", flush=True)
    Run.before = kpi.scrape(environment.host)


@events.test_stop.add_listener
def on_test_stop(environment: Environment, **_: Any) -> None:
    workload = ChatUser.workload
    if workload is None:
        return
    exact, same_item = workload.repetition()
    print(
        f"[meterline loadtest] sent {workload.sent} prompts: exact repeats {exact:.1%}, "
        f"same question {same_item:.1%}",
        flush=True,
    )
    report = kpi.build_report(
        workload=workload_parameters(environment), truth=Run.truth, before=Run.before,
        after=kpi.scrape(environment.host), latencies_ms=Run.latencies_ms,
        overheads_ms=Run.overheads_ms, requests=Run.requests, errors=Run.errors)
    stem = os.environ.get("MET_KPI_STEM") or getattr(environment.parsed_options, "csv_prefix",
                                                      None) or "loadtest-kpi"
    json_path, md_path = kpi.write(report, stem)
    print(kpi.markdown(report), flush=True)
    print(f"[meterline loadtest] KPI report: {json_path}, {md_path}", flush=True)


class ChatUser(HttpUser):
    """One person of one department, asking popular (often repeated) questions."""

    wait_time = between(0.2, 1.5)
    workload: Workload | None = None

    def on_start(self) -> None:
        options = self.environment.parsed_options
        keys, weights = zip(*DEPARTMENT_KEYS.items(), strict=True)
        self.api_key = random.choices(keys, weights)[0]
        self.user_id = f"user-{random.randrange(options.user_pool)}"
        self.model = options.model
        self.stream_ratio = options.stream_ratio

    def body(self, stream: bool) -> dict[str, Any]:
        assert self.workload is not None, "workload is built in test_start"
        drawn = self.workload.next_prompt()
        self.drawn = drawn
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": drawn.text}],
            "user": self.user_id,
            "max_tokens": 256,
            "stream": stream,
        }

    @task
    def chat(self) -> None:
        if random.random() < self.stream_ratio:
            self.chat_streaming()
        else:
            self.chat_once()

    def chat_once(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        started = time.perf_counter()
        with self.client.post(
            "/v1/chat/completions",
            json=self.body(False),
            headers=headers,
            name="chat",
            catch_response=True,
        ) as response:
            choices = response.json().get("choices") if response.status_code == 200 else None
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                Run.failed()
            elif not choices:
                response.failure("no choices in response")
                Run.failed()
            else:
                answer = (choices[0].get("message") or {}).get("content") or ""
                Run.answered(response.headers, self.drawn.rank, answer, self.drawn.text, started)

    def chat_streaming(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        started = time.perf_counter()
        with self.client.post(
            "/v1/chat/completions",
            json=self.body(True),
            headers=headers,
            name="chat (stream)",
            stream=True,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                Run.failed()
                return
            problem = self.read_stream(response, started)
            if problem:
                response.failure(problem)
                Run.failed()
            else:
                Run.answered(response.headers, self.drawn.rank, kpi.stream_text(self.lines),
                             self.drawn.text, started)

    def read_stream(self, response: Any, started: float) -> str | None:
        """Consume SSE lines; report time to first token; return a failure reason or None."""
        first_token = False
        self.lines: list[bytes] = []
        for line in response.iter_lines():
            if not line.startswith(b"data: "):
                continue
            self.lines.append(line)
            payload = line[6:]
            if payload == b"[DONE]":
                return None
            event = json.loads(payload)
            if "error" in event:
                return f"error event: {event['error'].get('message', '')[:200]}"
            if not first_token:
                first_token = True
                self.environment.events.request.fire(
                    request_type="TTFT",
                    name="chat (stream)",
                    response_length=0,
                    exception=None,
                    response_time=(time.perf_counter() - started) * 1000,
                    context={},
                )
        return "stream ended without [DONE]"
