"""Text out of an attached PDF for the chat page, with page markers, using pypdf. Read in memory
only: nothing is written anywhere (the text goes back to the page, which sends it with the
request and keeps it in the user's history)."""

from __future__ import annotations

import io
import logging
from typing import Any

from proxy.errors import InvalidRequest

MAX_PDF_BYTES = 10 * 1024 * 1024
MAX_PAGES = 300
MAX_TEXT_CHARS = 200_000  # ~50k tokens: more would not fit most models' context anyway

# pypdf reports some malformed files with builtin exceptions rather than its own
PDF_ERRORS = (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError)
logging.getLogger("pypdf").setLevel(logging.ERROR)  # malformed files are reported as 400s


def unreadable(detail: str) -> InvalidRequest:
    return InvalidRequest(f"The file is not a readable PDF: {detail}.", param="file",
                          code="invalid_file")


def pdf_text(data: bytes) -> dict[str, Any]:
    """{"pages", "pages_read", "text", "characters", "truncated"}; text is "[Page n]" blocks."""
    if not data.startswith(b"%PDF-"):
        raise unreadable("it does not start with %PDF-")
    # imported on the first PDF, not at start: ~20 MB of idle RSS for a rarely used feature
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidRequest("The PDF is password-protected; remove the password and attach "
                                 "it again.", param="file", code="encrypted_file")
        pages = len(reader.pages)
        parts, size, read = [], 0, 0
        for index in range(min(pages, MAX_PAGES)):
            text = (reader.pages[index].extract_text() or "").strip()
            block = f"[Page {index + 1}]\n{text}" if text else f"[Page {index + 1}]\n(no text)"
            parts.append(block)
            read, size = index + 1, size + len(block) + 2
            if size > MAX_TEXT_CHARS:
                break
    except (PyPdfError, *PDF_ERRORS) as exc:
        raise unreadable(str(exc) or type(exc).__name__) from None
    text = "\n\n".join(parts)
    truncated = len(text) > MAX_TEXT_CHARS or read < pages
    if truncated:
        text = text[:MAX_TEXT_CHARS] + (f"\n\n[Truncated: the first {read} of {pages} pages, "
                                         f"at most {MAX_TEXT_CHARS:,} characters.]")
    return {"object": "document", "pages": pages, "pages_read": read, "text": text,
            "characters": len(text), "truncated": truncated}
