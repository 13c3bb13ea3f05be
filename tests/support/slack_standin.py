"""A Slack incoming-webhook stand-in: records every JSON body POSTed to it, and when it arrived
(stdlib only)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Message = dict[str, Any]


class SlackStandin:
    """HTTP server on 127.0.0.1 that answers ``ok`` like Slack and keeps the posted messages."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._messages: list[Message] = []
        self._arrived: list[float] = []
        self._lock = threading.Lock()
        self.status = 200  # set to 500 etc. to make Slack refuse (the message is still recorded)
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/services/T000/B000/standin"

    @property
    def messages(self) -> list[Message]:
        with self._lock:
            return list(self._messages)

    @property
    def arrivals(self) -> list[tuple[float, Message]]:
        """``(time.monotonic() at arrival, message)`` for each message, in arrival order."""
        with self._lock:
            return list(zip(self._arrived, self._messages, strict=True))

    def start(self) -> SlackStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SlackStandin:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def texts(self) -> list[str]:
        """The ``text`` field of each message, in arrival order."""
        return [str(message.get("text", "")) for message in self.messages]

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 30.0) -> Message:
        """The first message matching ``predicate``; TimeoutError lists what did arrive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if predicate(message):
                    return message
            time.sleep(0.1)
        raise TimeoutError(f"no matching Slack message in {timeout}s; got {self.messages}")

    def _record(self, message: Message) -> None:
        arrived = time.monotonic()
        with self._lock:
            self._arrived.append(arrived)
            self._messages.append(message)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length", "0"))
                try:
                    standin._record(json.loads(self.rfile.read(length)))
                except json.JSONDecodeError:
                    self._reply(400, b"invalid_payload")
                    return
                status = standin.status
                self._reply(status, b"ok" if status == 200 else b"no_service")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # keep test output clean

        return Handler
