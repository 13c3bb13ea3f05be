"""PDF text extraction (pypdf) and POST /api/v1/chat/extract."""

from __future__ import annotations

import httpx
import pytest

from proxy.chat import documents
from proxy.chat.documents import pdf_text
from proxy.errors import InvalidRequest
from tests.support.pdfs import make_pdf
from tests.support.servers import ServerThread


def test_text_comes_with_page_markers() -> None:
    found = pdf_text(make_pdf(["Quarterly spend was 1200 dollars", "Budget (sales): 300"]))
    assert found["pages"] == 2 and found["pages_read"] == 2 and found["truncated"] is False
    assert found["text"] == ("[Page 1]\nQuarterly spend was 1200 dollars\n\n"
                             "[Page 2]\nBudget (sales): 300")


def test_long_documents_are_truncated_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "MAX_TEXT_CHARS", 60)
    found = pdf_text(make_pdf([f"page number {i} with some words" for i in range(5)]))
    assert found["truncated"] is True and found["pages"] == 5 and found["pages_read"] == 2
    assert found["text"].endswith("[Truncated: the first 2 of 5 pages, at most 60 characters.]")


@pytest.mark.parametrize(("data", "code", "message"), [
    (b"hello, not a pdf", "invalid_file",
     "The file is not a readable PDF: it does not start with %PDF-."),
    (b"%PDF-1.7\n garbage garbage", "invalid_file", None),
    (make_pdf(["secret"], password="pw"), "encrypted_file",
     "The PDF is password-protected; remove the password and attach it again."),
])
def test_unreadable_files_are_clear_400s(data: bytes, code: str, message: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        pdf_text(data)
    assert caught.value.code == code and caught.value.param == "file"
    if message:
        assert caught.value.message == message


def test_extract_endpoint(proxy: ServerThread) -> None:
    url = proxy.url + "/api/v1/chat/extract"
    auth = {"authorization": "Bearer sk-demo-sales"}
    ok = httpx.post(url, content=make_pdf(["Hello PDF"]),
                    headers={**auth, "content-type": "application/pdf"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["text"] == "[Page 1]\nHello PDF"
    wrong = httpx.post(url, content=b"x", headers={**auth, "content-type": "text/plain"})
    assert wrong.status_code == 400
    assert wrong.json()["error"] == {
        "message": "Invalid content type 'text/plain': send the PDF as application/pdf.",
        "type": "invalid_request_error", "param": "file", "code": "unsupported_file_type"}
    bad = httpx.post(url, content=b"%PDF-1.4 nonsense",
                     headers={**auth, "content-type": "application/pdf"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_file"
    assert httpx.post(url, content=b"%PDF-", headers={"content-type": "application/pdf"}
                      ).status_code == 401


def test_models_say_which_accept_images(proxy: ServerThread) -> None:
    models = httpx.get(proxy.url + "/v1/models",
                       headers={"authorization": "Bearer sk-demo-engineering"}).json()["data"]
    inputs = {m["id"]: m["input_modalities"] for m in models}
    assert inputs["gpt-4o-mini"] == ["text", "image"]
    assert inputs["gpt-3.5-turbo"] == ["text"]
