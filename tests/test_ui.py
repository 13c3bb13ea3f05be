"""Chat and Spend pages: static serving (in-process) and the pages driven in headless chromium
against a real proxy + mock upstream. Endpoints other helpers are still building are faked with
page.route() where a test needs a fixed answer from them."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from proxy.mock_upstream import answer_for
from tests.support.servers import ServerThread, mock_requests

CHROMIUM = "/usr/lib/chromium/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 10_000


def not_found(path: str) -> dict[str, Any]:
    return {"error": {"message": f"Unknown path: {path}", "type": "invalid_request_error",
                      "param": None, "code": "not_found"}}


# ----- static route (no browser) -----------------------------------------------------------------

@pytest.mark.parametrize(("path", "content_type", "marker"), [
    ("/", "text/html; charset=utf-8", b'src="/ui/chat.js"'),
    ("/chat", "text/html; charset=utf-8", b'src="/ui/chat.js"'),
    ("/spend", "text/html; charset=utf-8", b'src="/ui/spend.js"'),
    ("/ui/chat.js", "text/javascript; charset=utf-8", b"import "),
    ("/ui/style.css", "text/css; charset=utf-8", b":root"),
    ("/ui/icon.svg", "image/svg+xml", b"<svg"),
])
def test_static_files_have_content_types_and_revalidate(proxy: ServerThread, path: str,
                                                        content_type: str, marker: bytes) -> None:
    resp = httpx.get(proxy.url + path)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == content_type
    assert marker in resp.content
    assert resp.headers["cache-control"] == "no-cache"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    again = httpx.get(proxy.url + path, headers={"if-none-match": resp.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize("raw_path", [
    "/ui/handlers.py",
    "/ui/__init__.py",
    "/ui/../app.py",
    "/ui/..%2Fapp.py",
    "/ui/%2e%2e%2fapp.py",
    "/ui/..%5capp.py",
    "/ui/.hidden.js",
    "/ui/missing.js",
    "/ui/CHAT.JS",
    "/ui/chat.js%00.css",
    "/ui/",
])
def test_static_route_blocks_traversal_with_openai_404(proxy: ServerThread, raw_path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    try:
        conn.request("GET", raw_path)  # sent as written: no client-side path normalisation
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 404
    assert resp.getheader("content-type") == "application/json"
    assert set(body) == {"error"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "not_found"
    assert body["error"]["param"] is None
    assert body["error"]["message"].startswith("Unknown path: /ui/")


def test_ui_pages_need_no_key(proxy: ServerThread) -> None:
    assert httpx.post(proxy.url + "/spend").status_code == 405
    head = httpx.head(proxy.url + "/ui/api.js")
    assert head.headers["content-type"].startswith("text/javascript")


# ----- browser fixtures --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def use_key(page: Any, base: str, key: str, path: str = "/") -> None:
    page.goto(base + path)
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")


def chat_ready(page: Any, base: str, key: str = "sk-demo-engineering") -> None:
    use_key(page, base, key)
    page.wait_for_selector("#model:not([disabled])")


def ask(page: Any, text: str) -> Any:
    page.fill("#prompt", text)
    page.click("#send")
    page.wait_for_selector("#send:not([disabled])")
    return page.locator(".message.assistant").last


def sse_body(chunks: list[dict[str, Any]]) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def fake_stream(text: str, meterline: dict[str, Any]) -> str:
    base = {"object": "chat.completion.chunk", "model": "gpt-4o-mini"}
    pieces = re.findall(r"\S+\s*|\s+", text)
    deltas = [{**base, "choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    return sse_body([*deltas, {**base, "choices": [], "meterline": meterline}])


# ----- chat page ---------------------------------------------------------------------------------

@pytest.mark.browser
def test_chat_streams_the_mock_answer_with_badges(page: Any, proxy: ServerThread) -> None:
    prompt = "What does a reverse proxy do for LLM spend?"
    chat_ready(page, proxy.url)
    assert page.locator("#model option").count() >= 2
    answer = ask(page, prompt)
    assert answer.locator(".markdown").inner_text().strip() == answer_for(prompt, 24)
    cost = answer.locator("[data-badge=cost] .badge-value").inner_text()
    assert float(cost.removeprefix("$")) > 0
    assert answer.locator("[data-badge=route] .badge-value").inner_text() == "default"
    assert answer.locator("[data-badge=provider] .badge-value").inner_text() == "openai"
    assert re.fullmatch(r"\d+ in · \d+ out",
                        answer.locator("[data-badge=tokens] .badge-value").inner_text())
    suggestions = page.locator(".followups .suggestion")
    assert 1 <= suggestions.count() <= 3


def chat_bodies(mock: ServerThread) -> list[dict[str, Any]]:
    return [r["body"] for r in mock_requests(mock.url) if r["path"].endswith("/chat/completions")]


@pytest.mark.browser
def test_follow_up_click_sends_it_with_the_history(page: Any, proxy: ServerThread,
                                                   mock_upstream: ServerThread) -> None:
    chat_ready(page, proxy.url)
    ask(page, "Explain request routing")
    first = page.locator(".followups .suggestion").first
    suggestion = first.inner_text()
    first.click()
    expect(page.locator(".message.assistant .badge-cost")).to_have_count(2)
    assert page.locator(".message.user").last.inner_text().strip() == suggestion
    body = chat_bodies(mock_upstream)[-1]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == answer_for("Explain request routing", 24)
    assert body["messages"][-1]["content"] == suggestion
    assert body["stream"] is True


@pytest.mark.browser
def test_history_search_finds_the_conversation_after_reload(page: Any, proxy: ServerThread) -> None:
    chat_ready(page, proxy.url)
    ask(page, "How do budgets for the sales team work?")
    page.click("#new-chat")
    ask(page, "Unrelated question about pelicans")
    page.reload()
    page.wait_for_selector("#history .history-item")
    assert page.locator("#history .history-item").count() == 2
    page.fill("#search", "SALES team")
    hits = page.locator("#history .history-item")
    assert hits.count() == 1
    assert "sales team" in hits.first.inner_text()
    hits.first.click()
    page.wait_for_selector(".message.assistant .badge-cost")
    expected = answer_for("How do budgets for the sales team work?", 24)
    assert page.locator(".message.assistant .markdown").inner_text().strip() == expected
    page.fill("#search", "no-such-words-anywhere")
    assert page.locator("#history").inner_text().strip() == "No matches"


@pytest.mark.browser
def test_uploaded_file_reaches_the_upstream_as_a_fenced_block(page: Any, proxy: ServerThread,
                                                               mock_upstream: ServerThread) -> None:
    chat_ready(page, proxy.url)
    content = "name,cost\nsales,```12```\n"
    page.set_input_files("#file", files=[{"name": "costs.csv", "mimeType": "text/csv",
                                          "buffer": content.encode()}])
    chip = page.locator("#attachments .chip")
    assert chip.inner_text().startswith("costs.csv")
    ask(page, "Summarise this file")
    assert page.locator("#attachments .chip").count() == 0
    assert page.locator(".message.user .chip").inner_text() == "costs.csv"
    sent = chat_bodies(mock_upstream)[-1]["messages"][-1]["content"]
    # the fence is longer than the backtick run inside the file, so the file can't close it
    fenced = "File: costs.csv\n````csv\n" + content.rstrip("\n") + "\n````"
    assert sent == "Summarise this file\n\n" + fenced


@pytest.mark.browser
def test_binary_and_oversized_files_are_refused(page: Any, proxy: ServerThread) -> None:
    chat_ready(page, proxy.url)
    page.set_input_files("#file", files=[{"name": "big.txt", "mimeType": "text/plain",
                                          "buffer": b"x" * (100 * 1024 + 1)}])
    assert "the limit is 100 KB" in page.locator("#notice").inner_text()
    page.set_input_files("#file", files=[{"name": "photo.png", "mimeType": "image/png",
                                          "buffer": b"\x89PNG\r\n"}])
    assert "not a text file" in page.locator("#notice").inner_text()
    assert page.locator("#attachments .chip").count() == 0


@pytest.mark.browser
def test_stop_button_aborts_the_request(page: Any, proxy: ServerThread,
                                        mock_upstream: ServerThread) -> None:
    httpx.post(mock_upstream.url + "/_mock/faults", json={"delay_ms": 2500}).raise_for_status()
    try:
        chat_ready(page, proxy.url)
        page.fill("#prompt", "Take your time #fault:slow")
        page.click("#send")
        page.wait_for_selector("#stop:not([hidden])")
        assert page.locator("#send").is_disabled()
        page.click("#stop")
        page.wait_for_selector(".message.assistant .stopped")
        assert page.locator("#stop").is_hidden()
        assert page.locator("#send").is_enabled()
        assert page.locator(".message.assistant .error-box").count() == 0
    finally:
        httpx.post(mock_upstream.url + "/_mock/faults", json={"delay_ms": 300}).raise_for_status()


@pytest.mark.browser
def test_bad_key_shows_openai_error(page: Any, proxy: ServerThread) -> None:
    use_key(page, proxy.url, "sk-not-a-real-key")
    notice = page.locator("#notice")
    notice.wait_for()
    assert notice.inner_text() == "Key rejected: Incorrect API key provided."
    answer = ask(page, "hello")
    error = answer.locator(".error-box")
    assert error.locator(".error-message").inner_text() == "Incorrect API key provided."
    assert error.locator(".error-detail").inner_text() == (
        "authentication_error · invalid_api_key · HTTP 401")


@pytest.mark.browser
def test_stream_error_event_is_shown(page: Any, proxy: ServerThread) -> None:
    chat_ready(page, proxy.url)
    answer = ask(page, "Cut me off #fault:cut")
    assert answer.locator(".error-box .error-message").inner_text().startswith("Upstream")
    assert answer.locator(".markdown").inner_text().startswith("Mock answer")


@pytest.mark.browser
def test_model_text_is_escaped_and_markdown_rendered(page: Any, proxy: ServerThread) -> None:
    text = ("## Caching <b>plan</b>\n\nUse **exact keys** first <img src=x onerror=alert(1)>.\n\n"
            "```python\nprint('<script>hi</script>')\n```\n- one\n- two")
    stream = fake_stream(text, {"cost_usd": 0.0004, "input_tokens": 12, "output_tokens": 30,
                                "cache": "miss", "budget_remaining_usd": 12.5,
                                "request_id": "req_fake"})
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, body=stream, headers={"content-type": "text/event-stream",
                                          "x-request-id": "req_fake"}))
    chat_ready(page, proxy.url)
    answer = ask(page, "caching?")
    md = answer.locator(".markdown")
    assert md.locator("img, script, b").count() == 0
    assert md.locator("h4").inner_text() == "Caching <b>plan</b>"
    assert md.locator("strong").inner_text() == "exact keys"
    assert "<img src=x onerror=alert(1)>" in md.locator("p").inner_text()
    assert md.locator("pre code.language-python").inner_text() == "print('<script>hi</script>')"
    assert md.locator("ul li").all_inner_texts() == ["one", "two"]
    assert answer.locator("[data-badge=budget] .badge-value").inner_text() == "$12.50"
    assert page.locator(".followups .suggestion").all_inner_texts() == [
        "Tell me more about “Caching <b>plan</b>”",
        "Explain the python example step by step",
        "What does “exact keys” mean here?",
    ]


def cached_answer_route(page: Any) -> None:
    stream = fake_stream("Cached words.", {"cost_usd": 0.0, "input_tokens": 5, "output_tokens": 3,
                                           "cache": "hit-semantic", "request_id": "req_cached1"})
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, body=stream, headers={"content-type": "text/event-stream",
                                          "x-meterline-cache": "hit-semantic",
                                          "x-request-id": "req_cached1"}))


@pytest.mark.browser
def test_wrong_answer_and_feedback_handle_missing_endpoints(page: Any, proxy: ServerThread) -> None:
    cached_answer_route(page)
    for path in ("/v1/cache/report", "/v1/feedback"):
        page.route(f"**{path}", lambda route, p=path: route.fulfill(
            status=404, json=not_found(p)))
    chat_ready(page, proxy.url)
    answer = ask(page, "anything")
    assert answer.locator("[data-badge=cache-hit] .badge-value").inner_text() == "hit-semantic"
    answer.locator(".wrong-answer").click()
    status = answer.locator(".action-status")
    expect(status).to_have_text("Reporting isn't available on this proxy yet.")
    answer.get_by_role("button", name="Good answer").click()
    expect(status).to_have_text("Feedback isn't available on this proxy yet.")
    good = answer.get_by_role("button", name="Good answer")
    expect(good).to_have_attribute("aria-pressed", "false")


@pytest.mark.browser
def test_feedback_and_report_post_the_request_id(page: Any, proxy: ServerThread) -> None:
    cached_answer_route(page)
    posted: list[tuple[str, Any]] = []

    def accept(route: Any) -> None:
        posted.append((route.request.url.split("/v1/")[1], route.request.post_data_json))
        route.fulfill(status=200, json={"ok": True})

    page.route("**/v1/cache/report", accept)
    page.route("**/v1/feedback", accept)
    chat_ready(page, proxy.url)
    answer = ask(page, "anything")
    answer.get_by_role("button", name="Bad answer").click()
    page.wait_for_selector("button[aria-label='Bad answer'][aria-pressed=true]")
    answer.locator(".wrong-answer").click()
    expect(answer.locator(".action-status")).to_have_text(re.compile("^Reported"))
    assert posted == [("feedback", {"request_id": "req_cached1", "score": 0}),
                      ("cache/report", {"request_id": "req_cached1"})]


@pytest.mark.browser
def test_admin_alert_banner(page: Any, proxy: ServerThread) -> None:
    alerts = {"alerts": [{"labels": {"alertname": "MeterlineSpendBurn", "severity": "warning"},
                          "annotations": {"summary": "Sales is burning its daily budget fast"}}]}
    page.route("**/admin/alerts", lambda route: route.fulfill(status=200, json=alerts))
    chat_ready(page, proxy.url, "sk-demo-admin")
    banner = page.locator("#alerts")
    banner.wait_for()
    assert "Sales is burning its daily budget fast" in banner.inner_text()
    banner.get_by_role("button", name="Dismiss alerts").click()
    assert banner.is_hidden()


@pytest.mark.browser
def test_no_alert_banner_when_alerts_fail(page: Any, proxy: ServerThread) -> None:
    chat_ready(page, proxy.url, "sk-demo-sales")  # the real proxy answers 404 or 401 here
    page.wait_for_load_state("networkidle")
    assert page.locator("#alerts").is_hidden()


# ----- spend page --------------------------------------------------------------------------------

@pytest.mark.browser
def test_spend_page_says_what_is_not_available(page: Any, proxy: ServerThread) -> None:
    for path in ("/admin/spend", "/admin/chargeback", "/v1/cache/analytics"):
        page.route(f"**{path}*", lambda route, p=path: route.fulfill(status=404, json=not_found(p)))
    use_key(page, proxy.url, "sk-demo-admin", "/spend")
    page.wait_for_selector("#updated:has-text('Updated')")
    assert page.locator("#departments").inner_text() == (
        "Not available: this proxy does not serve GET /admin/spend or GET /admin/chargeback yet.")
    assert page.locator("#cache").inner_text() == (
        "Not available: this proxy does not serve GET /v1/cache/analytics yet.")
    assert page.locator("#card-today").inner_text() == "–"
    assert page.locator("#notice").is_hidden()


SPEND = {"departments": [
    {"department": "sales", "budgets": [
        {"period": "daily", "limit_dollars": 30, "spent_dollars": 27, "reserved_dollars": 0},
        {"period": "monthly", "limit_dollars": 500, "spent_dollars": 120, "reserved_dollars": 0}]},
    {"department": "executive", "budgets": [
        {"period": "monthly", "limit_dollars": 1000, "spent_dollars": 5, "reserved_dollars": 0}]},
], "recent": [
    {"ts": 1_700_000_000, "department": "sales", "model_used": "gpt-4o-mini", "cache": "miss",
     "input_tokens": 10, "output_tokens": 20, "cost": 0.0012, "latency_ms": 412.3},
]}
CACHE = {"hits": 30, "misses": 70, "saved_usd": 4.25}


def chargeback_today() -> dict[str, Any]:
    from datetime import UTC, datetime

    day = datetime.now(UTC).strftime("%Y-%m-%d")
    rows = [{"day": day, "department": "sales", "model": "gpt-4o-mini", "requests": 40,
             "cost_usd": "27.000000", "saved_usd": "1.500000"},
            {"day": day, "department": "executive", "model": "gpt-4o", "requests": 2,
             "cost_usd": "5.000000", "saved_usd": "0.000000"}]
    return {"rows": rows, "total": {"saved_usd": "1.500000"}, "currency": "USD"}


@pytest.mark.browser
def test_spend_page_renders_budgets_models_cache_and_polls(page: Any, proxy: ServerThread) -> None:
    calls: list[str] = []

    def serve(payload: Any) -> Any:
        def handler(route: Any) -> None:
            calls.append(route.request.url)
            route.fulfill(status=200, json=payload)
        return handler

    page.route("**/admin/spend", serve(SPEND))
    page.route("**/admin/chargeback*", serve(chargeback_today()))
    page.route("**/v1/cache/analytics", serve(CACHE))
    page.clock.install()
    use_key(page, proxy.url, "sk-demo-admin", "/spend")
    page.wait_for_selector("#departments table")
    sales_today = page.get_by_role("meter", name="sales today")
    assert sales_today.get_attribute("aria-valuenow") == "27"
    assert sales_today.get_attribute("aria-valuemax") == "30"
    assert "warn" in (sales_today.get_attribute("class") or "")
    assert page.get_by_role("meter", name="executive this month").get_attribute(
        "aria-valuemax") == "1000"
    assert page.locator("#card-today").inner_text() == "$32.00"  # sales 27 + executive 5
    assert page.locator("#card-hit").inner_text() == "30.0%"
    assert page.locator("#card-saved").inner_text() == "$4.25"
    assert page.locator("#models tbody th").all_inner_texts() == ["gpt-4o-mini", "gpt-4o"]
    assert "gpt-4o-mini" in page.locator("#recent tbody").inner_text()
    first_round = len(calls)
    assert first_round == 3
    page.clock.run_for(10_500)
    expect(page.locator("#models tbody tr")).to_have_count(2)
    deadline_polls = 50
    while len(calls) < 2 * first_round and deadline_polls:
        page.wait_for_timeout(100)
        deadline_polls -= 1
    assert len(calls) == 2 * first_round


@pytest.mark.browser
def test_spend_page_asks_for_an_admin_key(page: Any, proxy: ServerThread) -> None:
    denied = {"error": {"message": "This endpoint needs an admin key.",
                        "type": "authentication_error", "param": None,
                        "code": "admin_key_required"}}
    for path in ("/admin/spend", "/admin/chargeback*", "/v1/cache/analytics"):
        page.route(f"**{path}", lambda route: route.fulfill(status=401, json=denied))
    use_key(page, proxy.url, "sk-demo-sales", "/spend")
    notice = page.locator("#notice")
    notice.wait_for()
    assert notice.inner_text() == "This page needs an admin key: This endpoint needs an admin key."
