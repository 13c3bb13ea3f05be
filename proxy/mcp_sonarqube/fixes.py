"""Ask an LLM for a fix, through Meterline, with an engineering key.

The call is an ordinary ``POST /v1/chat/completions`` to the proxy, so it is authenticated,
routed, cached and charged to the key's department like any other. Temperature 0 keeps identical
questions identical, so a second ask about the same issue is a cache hit. The prompt avoids
fenced code blocks: rules/routing.yaml sends those to the code-review rule, which the shipped
cache config leaves uncached.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from proxy.mcp_sonarqube.errors import MeterlineError

TASK = "sonarqube-fix"  # x-meterline-task: shows in spend records and routing rules
SYSTEM_PROMPT = (
    "You are a senior engineer fixing static-analysis findings. Explain briefly why the code "
    "is flagged and how to fix it. Then give the fix as a unified diff against the file, inside "
    "a fenced block marked diff. Change only what the fix needs."
)
DIFF_BLOCK = re.compile(r"```(?:diff|patch)[^\n]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Answer:
    text: str
    model: str
    cache: str | None
    cost_usd: float | None


def split_answer(text: str) -> tuple[str, str | None]:
    """(explanation, patch): the first ```diff block is the patch, the rest explains it."""
    match = DIFF_BLOCK.search(text)
    if match is None:
        return text.strip(), None
    explanation = (text[: match.start()] + text[match.end():]).strip()
    return explanation, match.group(1).rstrip() + "\n"


def build_prompt(*, rule: str, rule_name: str, rule_text: str, file: str | None,
                 line: int | None, message: str, code: str) -> str:
    where = f"{file or 'unknown file'}, line {line}" if line else (file or "unknown file")
    return (
        f"Finding: {message}\nRule {rule}: {rule_name}\nLocation: {where}\n\n"
        f"Rule description:\n{rule_text}\n\n"
        f"Code (line numbers on the left):\n{code}\n"
    )


class MeterlineClient:
    """Chat completions against a Meterline proxy with one key."""

    def __init__(self, proxy_url: str, api_key: str | None, model: str, *,
                 timeout_s: float) -> None:
        self.proxy_url = proxy_url
        self.model = model
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def close(self) -> None:
        await self._session.close()

    async def ask(self, prompt: str) -> Answer:
        if not self._api_key:
            raise MeterlineError(
                "suggest_fixes needs MET_MCP_API_KEY: set it to an engineering key for Meterline "
                f"(at {self.proxy_url}, MET_MCP_PROXY_URL) and restart the MCP server.")
        body = {"model": self.model, "temperature": 0, "max_tokens": 1200, "messages": [
            {"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]}
        headers = {"Authorization": f"Bearer {self._api_key}", "x-meterline-task": TASK}
        url = f"{self.proxy_url}/v1/chat/completions"
        try:
            async with self._session.post(url, json=body, headers=headers) as response:
                raw = await response.read()
                status, got = response.status, response.headers
                cache, cost = got.get("x-meterline-cache"), got.get("x-meterline-cost-usd")
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise MeterlineError(
                f"Meterline at {self.proxy_url} did not answer within {self._timeout_s:g} s "
                "(MET_MCP_LLM_TIMEOUT_S).") from None
        except aiohttp.ClientError as exc:
            raise MeterlineError(
                f"Cannot reach Meterline at {self.proxy_url} ({type(exc).__name__}). Check "
                "MET_MCP_PROXY_URL and that the proxy is running.") from None
        data = _json(raw)
        if status >= 400:
            raise MeterlineError(_proxy_error(status, data))
        try:
            text = str(data["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise MeterlineError(
                f"Meterline answered {status} without a chat completion; is MET_MCP_PROXY_URL "
                "a Meterline proxy?") from None
        return Answer(text=text, model=str(data.get("model") or self.model), cache=cache,
                      cost_usd=float(cost) if cost else None)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _proxy_error(status: int, data: dict[str, Any]) -> str:
    error = data.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    said = f": {message}" if message else ""
    if status == 401:
        return (f"Meterline rejected MET_MCP_API_KEY ({status}){said}. Use an active "
                "engineering key.")
    if status == 403:
        return f"Meterline refused the request ({status}){said}. Check MET_MCP_MODEL."
    if status == 429:
        return f"Meterline refused the request ({status}){said}."
    return f"The LLM call through Meterline failed ({status}){said}."
