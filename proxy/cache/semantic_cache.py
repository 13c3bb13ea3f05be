"""The answer cache on the request path: lookup (exact, then semantic), serve, store, shadow.

`SemanticCache` implements what proxy/gateway/accounting.py calls. A lookup embeds the last user
turn at most once (and not at all when the exact lookup hits); the vector is kept on the call so the
store after a miss does not embed again. Storage is a `CacheBackend` (memory or Redis Stack).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from redis.exceptions import RedisError
from starlette.responses import Response

from proxy.cache import stats
from proxy.cache.backend import COMPLETE, CacheBackend, Entry, Vector
from proxy.cache.bookkeeping import Batch, Bookkeeper, Served
from proxy.cache.cache_key import (
    Controls,
    Key,
    bypass_reason,
    controls_of,
    cut_hash,
    key_of,
    output_limit,
)
from proxy.cache.config import CacheConfig, Effective
from proxy.cache.embedder import EMBED_ERRORS, Embedder, TokenEmbedder
from proxy.cache.judge import Judge
from proxy.cache.lookups import Flight, Hit, Lookup, grown_ttl
from proxy.cache.matching.match import Candidate, MatchRule, Tokens
from proxy.cache.replay import (
    ReplayResponse,
    Template,
    as_stream,
    assemble,
    cacheable_json,
    fill,
    template_of,
)
from proxy.cache.shadow import ShadowScore
from proxy.cache.token_states import TokenStates
from proxy.gateway.requests import Call
from proxy.gateway.streaming import SSE_HEADERS
from proxy.memo import BoundedMemo, body_shape
from proxy.runtime.services import Services
from proxy.spend.pricing import format_nanos, to_nanos

log = logging.getLogger("meterline.cache")
BACKEND_ERRORS = (RedisError, OSError)
MAX_TEMPLATES = 1024  # answers kept parsed for replay (a few KB each)
# request bodies remembered with their cache key: at most MEMO_KEYS x MEMO_BODY_BYTES (1 MB)
MEMO_KEYS = 256


# an entry's saving, as its hits show it (the same few values again and again)
saved_text = functools.lru_cache(maxsize=1024)(format_nanos)


class SemanticCache:
    """Exact + semantic answer cache; see module docstring."""

    def __init__(self, config: CacheConfig, backend: CacheBackend, embedder: Embedder | None,
                 on_bookkeeping_failure: Callable[[], None] | None = None) -> None:
        self.config = config
        self.backend = backend
        self.embedder = embedder
        self.book = Bookkeeper(self._write_bookkeeping, self._expiry_after_hits,
                               on_bookkeeping_failure)
        self.judge = Judge(self.book)
        self._rules: dict[float, MatchRule] = {}
        self._flights: dict[tuple[str, str], Flight] = {}
        # (scope, text hash) -> when its last flight landed (time.monotonic())
        self._landings: BoundedMemo[tuple[str, str], float] = BoundedMemo()
        self.token_states = TokenStates()
        self._templates: BoundedMemo[str, Template] = BoundedMemo(MAX_TEMPLATES)  # by entry id
        self.text_hashes: BoundedMemo[str, str] = BoundedMemo()  # question -> its exact hash
        self._settings: BoundedMemo[tuple[str | None, str, str | None],
                                    tuple[CacheConfig, Effective]] = BoundedMemo()
        # (body as JSON, owner, model) -> its key: the same request comes back on every hit
        self._keys: BoundedMemo[tuple[bytes, str, str], tuple[Key | None]] = BoundedMemo(
            MEMO_KEYS)
        self._hit_fields: BoundedMemo[tuple[str, str, str, str], tuple[str, str]] = (
            BoundedMemo())

    # -- lookup ------------------------------------------------------------------------------

    async def probe(self, call: Call, model: str) -> Hit | None:
        """The exact answer, looked up before the call is admitted: an exact hit spends nothing,
        so it is admitted without a hold (gateway/pipeline.run_call). Counts and marks nothing:
        `lookup` does, once the call is admitted, going on from what the probe found (a
        refused call leaves no trace in the cache's counts). A backend error is left to
        `lookup` to meet and count."""
        prepared = call.cache_probe = self._prepare(call, model)
        state = prepared[0]
        if state is None or not state.controls.lookup or state.settings.mode == "shadow":
            return None
        state.probed_at = time.monotonic()
        try:
            hit = await self._exact(state.key, state.limit)
        except BACKEND_ERRORS:
            return None
        state.exact_missed = hit is None
        return hit

    def forgo(self, call: Call) -> None:
        """The cache failed this call: it is answered uncached (a later lookup finds nothing,
        a budget cap changes nothing, nothing is stored)."""
        call.cache_state = None
        call.cache_probe = (None, False)

    async def lookup(self, services: Services, call: Call, model: str,
                     probed: Hit | None = None) -> Hit | None:
        """`probed`: the exact hit `probe` found for this call, now admitted."""
        state = await self._begin(services, call, model)
        if state is None or not state.controls.lookup:
            return None
        try:
            hit = probed if probed is not None else await self._find(services, call, state)
        except BACKEND_ERRORS as exc:
            log.warning("cache lookup failed, answering without cache: %s", exc)
            call.cache_state = None
            await self._mark(services, call, state, "bypass", "none")
            return None
        if state.judging is not None:
            call.headers["x-meterline-cache-judge"] = state.judging.outcome
            call.headers["x-meterline-cache-judge-cost-usd"] = format_nanos(
                state.judging.cost_nanos, 8)
        if state.settings.mode == "shadow":
            state.shadow = hit
            await self._mark(services, call, state, "shadow", hit.kind if hit else "none")
            return None
        if hit is None:
            try:
                hit = await self._wait_or_lead(state, call.stream)
            except BACKEND_ERRORS as exc:
                log.warning("cache lookup after waiting failed: %s", exc)
        if hit is None:
            await self._mark(services, call, state, "miss", self._kind_of(state))
            return None
        call.headers["x-meterline-cache"] = "hit-" + hit.kind
        if hit.coalesced:
            call.headers["x-meterline-cache-coalesced"] = "true"
        call.headers["x-meterline-cache-entry"] = hit.entry.id
        if hit.kind == "semantic":
            call.headers["x-meterline-cache-similarity"] = f"{hit.similarity:.4f}"
        return hit

    async def _begin(self, services: Services, call: Call, model: str) -> Lookup | None:
        prepared: tuple[Lookup | None, bool] | None = call.cache_probe
        call.cache_probe = None
        if prepared is None:
            prepared = self._prepare(call, model)
        elif prepared[0] is not None and prepared[0].limit != output_limit(call.body):
            # the budget capped the call's output after the probe: only answers that fit the
            # new limit are served, and the exact answer is looked up again at it
            prepared[0].limit, prepared[0].exact_missed = output_limit(call.body), False
        state, counted = prepared
        if state is None:
            call.headers["x-meterline-cache"] = "bypass"
            if counted:  # a chat call the cache does not take: counted as a bypass
                record = call.record
                if record is not None:
                    record.cache = "bypass"
                task = stats.label(record.task if record else None)
                await self._count(services, call.department_name, model, task, "bypass",
                                  "none")
            return None
        call.cache_state = state
        if not state.controls.lookup:
            await self._mark(services, call, state, "bypass", "none")
        return state

    def _prepare(self, call: Call, model: str) -> tuple[Lookup | None, bool]:
        """(what a lookup of this call needs, or None when the cache does not take it; whether
        it is a chat call, whose bypass is counted). Takes the cache control out of the body,
        so it runs once per call: `probe` keeps its result on the call for `lookup`."""
        if call.endpoint != "chat.completions":
            return None, False
        controls, changed = controls_of(call.inbound, call.body)
        if changed:
            call.raw = orjson.dumps(call.body)
        record = call.record
        settings = self._effective(call.department, model, record.route_rule if record else None)
        owner = self.config.owner_of(call.department)
        key = self._key(call.body, owner, model, len(call.raw))
        if key is not None and len(key.text) > self.config.max_question_chars:
            key = None
        if (not settings.enabled or key is None or bypass_reason(call.body, settings)
                or not (controls.lookup or controls.store)):
            return None, True
        task = stats.label(record.task if record else None)
        return Lookup(key, settings, controls, call.department_name, task,
                      output_limit(call.body)), False

    def _key(self, body: dict[str, Any], owner: str, model: str,
             raw_size: int = 0) -> Key | None:
        """key_of(), remembered by the body's JSON for bodies up to MEMO_BODY_BYTES: one
        encoding of the body instead of three sorted ones and two digests (key_of is a function
        of the body, owner and model alone). `raw_size`: the body's size as received; a body
        too large to remember is not encoded."""
        shape = body_shape(body, raw_size)
        if shape is None:
            return key_of(body, owner, model, self.text_hashes)
        found = self._keys.get((shape, owner, model))
        if found is None:
            found = self._keys.put((shape, owner, model),
                                   (key_of(body, owner, model, self.text_hashes),))
        return found[0]

    def _effective(self, department: str | None, model: str, route: str | None) -> Effective:
        """The settings for (department, model, route), built once per config (a frozen
        dataclass and its override layers on every request)."""
        found = self._settings.get((department, model, route))
        if found is None or found[0] is not self.config:
            found = self._settings.put((department, model, route),
                                       (self.config, self.config.effective(department, model,
                                                                           route)))
        return found[1]

    async def _wait_or_lead(self, state: Lookup, stream: bool) -> Hit | None:
        """After a miss: wait for an identical request already out upstream and look again, or
        lead a flight that identical requests will wait for (when this one will store)."""
        settings = self.config.coalesce
        if not settings.enabled or (stream and not settings.streams):
            return None
        key = (state.key.scope, state.key.text_hash)
        now = time.monotonic()
        flight = self._flights.get(key)
        if flight is None or now - flight.started >= settings.max_wait_seconds:
            if state.controls.store:  # a stale flight (its leader never landed) is replaced
                state.flight = self._flights[key] = Flight(key, now)
            return None
        try:
            await asyncio.wait_for(flight.landed.wait(),
                                   settings.max_wait_seconds - (now - flight.started))
        except TimeoutError:
            return None
        return await self._exact(state.key, state.limit, coalesced=True)

    def end_flight(self, call: Call) -> None:
        """The request leading a flight has stored its answer, or failed: wake the waiters
        (they look up the cache again, and go upstream themselves if nothing was stored)."""
        state: Lookup | None = call.cache_state
        if state is None or state.flight is None:
            return
        flight, state.flight = state.flight, None
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        self._landings.put(flight.key, time.monotonic())
        flight.landed.set()

    def _landed_since(self, state: Lookup) -> bool:
        """A flight for this question landed after the probe asked for its answer (while the
        call was being admitted): the answer may be stored now."""
        landed = self._landings.get((state.key.scope, state.key.text_hash))
        return landed is not None and landed >= state.probed_at

    def answered_by(self, call: Call, model: str) -> None:
        """A fallback `model` answered, not the one the lookup was for: store the answer under
        `model`'s key and settings (so it is served only to requests for `model`, naming it), or
        not at all where `model` is not cached."""
        state: Lookup | None = call.cache_state
        if state is None:
            return
        record = call.record
        settings = self._effective(call.department, model, record.route_rule if record else None)
        key = key_of(call.body, state.key.owner, model, self.text_hashes)
        state.shadow = None  # a shadow hit for the planned model says nothing about this answer
        if key is None or not settings.enabled or bypass_reason(call.body, settings):
            state.controls = Controls(state.controls.lookup, store=False)
            return
        state.key, state.settings = key, settings

    def _kind_of(self, state: Lookup) -> str:
        return "exact" if state.settings.mode == "exact" else "semantic"

    async def _mark(self, services: Services, call: Call, state: Lookup, result: str,
              kind: str) -> None:
        call.headers["x-meterline-cache"] = result
        if call.record is not None:
            call.record.cache = result  # type: ignore[assignment]
        await self._count(services, state.department, state.key.model, state.task, result, kind)

    async def _count(self, services: Services, department: str, model: str, task: str,
                     result: str, kind: str) -> None:
        services.metrics.record_cache(department, model, kind, result)
        self.book.count({stats.request_field(result, kind, department, model, task): 1})

    async def _exact(self, key: Key, limit: int | None, coalesced: bool = False) -> Hit | None:
        """The complete answer to this text if it fits the limit, else the answer this very
        limit cut short (stored apart, under `cut_hash`)."""
        entry = await self.backend.get_exact(key.scope, key.text_hash)
        if (entry is None or not entry.fits(limit)) and limit is not None:
            entry = await self.backend.get_exact(key.scope, cut_hash(key.text_hash, limit))
        if entry is None or not entry.fits(limit):
            return None
        return Hit(entry, "exact", 1.0, coalesced)

    async def _find(self, services: Services, call: Call, state: Lookup) -> Hit | None:
        key = state.key
        if not state.exact_missed or self._landed_since(state):
            hit = await self._exact(key, state.limit)
            if hit is not None:
                return hit
        if state.settings.mode == "exact":
            return None
        state.vector, state.tokens = await self._embed(key.text)
        if state.vector is None:
            return None
        candidates = await self.backend.search(key.scope, state.vector, self.config.top_k)
        tightened = await self.backend.threshold(key.partition) if candidates else None
        rule = self.rule(max(state.settings.threshold, tightened or 0.0))
        # after a wrong-answer report (a tightened threshold in force) the partition gets no
        # judge: the least certain way to a hit, and the band would widen with the threshold
        reported = tightened is not None and tightened > state.settings.threshold
        judge = self.config.judge if state.settings.judge and not reported else None
        floor = rule.candidate_threshold if judge is None else min(judge.floor,
                                                                   rule.candidate_threshold)
        # below the candidate floor (and the judge's band) nothing can match: a miss costs no
        # verification
        candidates = [(e, s) for e, s in candidates if s >= floor and e.fits(state.limit)]
        if not candidates:
            return None
        band = [(e, s) for e, s in candidates if s < rule.candidate_threshold]
        if len(band) < len(candidates):
            verified = [c for c in candidates if c[1] >= rule.candidate_threshold]
            hit = await self._verify(state, verified, rule)
            if hit is not None:
                return hit
        if band and judge is not None:  # only what the verifier never sees goes to the judge
            return await self.judge.first_same(services, call, state, band, judge, rule)
        return None

    async def _verify(self, state: Lookup, candidates: list[tuple[Entry, float]],
                      rule: MatchRule) -> Hit | None:
        """The match rule's first accepted candidate (from its candidate floor up)."""
        tokens = await self._candidate_tokens([e for e, _ in candidates], state.tokens, rule)
        found = rule.first_accepted(
            state.key.text,
            [Candidate(e.text, s, t) for (e, s), t in zip(candidates, tokens, strict=True)],
            state.tokens,
        )
        if found is None:
            state.judged = (max(candidates, key=lambda c: c[1])[0], False)
            return None
        index, decision = found
        state.judged = (candidates[index][0], True)
        return Hit(candidates[index][0], "semantic", decision.similarity)

    async def _candidate_tokens(self, entries: list[Entry], query: Tokens | None,
                                rule: MatchRule) -> list[Tokens | None]:
        """Per-token outputs of the candidates (kept since they were stored, or embedded now),
        when the verifier will use them."""
        if query is None or rule.model is None or not isinstance(self.embedder, TokenEmbedder):
            return [None] * len(entries)
        found = [self.token_states.get(e.text_hash) for e in entries]
        missing = sorted({e.text for e, t in zip(entries, found, strict=True) if t is None})
        if missing:
            try:
                _, pieces = await self.embedder.embed_with_tokens(missing)
            except EMBED_ERRORS as exc:
                log.warning("candidate embedding failed, guards decide: %s", exc)
                return found
            fresh = dict(zip(missing, pieces, strict=True))
            for i, entry in enumerate(entries):
                if found[i] is None:
                    found[i] = fresh[entry.text]
                    self.token_states.put(entry.text_hash, fresh[entry.text])
        return found

    def rule(self, threshold: float) -> MatchRule:
        if threshold not in self._rules:
            settings = self.config.match.model_copy(update={"threshold": threshold})
            self._rules[threshold] = MatchRule(settings)
        return self._rules[threshold]

    async def _embed(self, text: str) -> tuple[Vector | None, Tokens | None]:
        if self.embedder is None:
            return None, None
        try:
            if isinstance(self.embedder, TokenEmbedder):
                vectors, tokens = await self.embedder.embed_with_tokens([text])
                return np.asarray(vectors[0], dtype=np.float32), tokens[0]
            vectors = await self.embedder.embed([text])
            return np.asarray(vectors[0], dtype=np.float32), None
        except EMBED_ERRORS as exc:
            log.warning("embedding failed, semantic lookup skipped: %s", exc)
            return None, None

    # -- serve -------------------------------------------------------------------------------

    async def serve(self, services: Services, call: Call, reservation: Any,
                    cached: Hit) -> Response:
        """Answer from the cache: nothing charged, the original cost counted as saved (less
        what the LLM judge cost, when it decided: that was charged on its own record)."""
        record = call.record
        assert record is not None
        entry = cached.entry
        state: Lookup | None = call.cache_state
        judged = state.judging if state is not None and cached.judged else None
        saved = max(0, to_nanos(entry.cost) - (judged.cost_nanos if judged else 0))
        record.cache = "hit-" + cached.kind  # type: ignore[assignment]
        record.status, record.cost, record.saved_nanos = 200, 0.0, saved
        if judged is not None:
            record.extra["cache_judge"] = judged.outcome
        record.latency_ms = call.elapsed() * 1000
        headers = {**call.headers, "x-meterline-cost-usd": "0.00000000",
                   "x-meterline-cache-saved-usd": saved_text(saved, 8),
                   "x-meterline-overhead-ms": f"{call.overhead_ms():.2f}"}

        async def after() -> None:  # once the answer is sent: the client does not wait for it
            if services.spend is not None:
                if reservation is not None:
                    await services.spend.release(reservation)
                await services.spend.add_record(record)
            self._after_hit(call, state, cached, record.saved)
            m = services.metrics
            m.record_cache(call.department_name, record.model_requested, cached.kind, "hit",
                           record.saved)
            m.record_request("/v1" + call.path, record.model_requested, call.department_name,
                             200, call.elapsed(), None)

        if not call.stream:
            return ReplayResponse(fill(self._template(entry)), headers, "application/json",
                                  after)
        completion = orjson.loads(entry.response)
        include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        info = {"cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0, "estimated": False,
                "cache": record.cache, "saved_usd": record.saved,
                "department": call.department, "budget_remaining_usd": None,
                "request_id": call.request_id}
        events = as_stream(completion, include_usage, info)
        # the whole answer is at hand: one body, not a chunk per event (a sync iterator in a
        # StreamingResponse also costs a thread hop per event)
        return ReplayResponse(b"".join(events), {**SSE_HEADERS, **headers}, "text/event-stream",
                              after)

    def _template(self, entry: Entry) -> Template:
        """The entry's JSON answer, parsed once per entry id (an id's answer never changes)."""
        template = self._templates.get(entry.id)
        if template is None:
            template = self._templates.put(entry.id, template_of(orjson.loads(entry.response)))
        return template

    def _after_hit(self, call: Call, state: Lookup | None, cached: Hit, saved: float) -> None:
        """Hit count, expiry, counters and the served record: gathered, written a few ms later
        in one batch (proxy/cache/bookkeeping.py), never awaited by the request."""
        entry = cached.entry
        department = call.department_name
        task = state.task if state else "none"
        names = self._hit_fields.get((cached.kind, department, entry.model, task))
        if names is None:
            names = self._hit_fields.put((cached.kind, department, entry.model, task),
                                         stats.hit_field_names(cached.kind, department,
                                                               entry.model, task))
        self.book.hit(entry, {names[0]: 1, names[1]: saved},
                      Served(call.request_id, {
                          "entry_id": entry.id, "department": department,
                          "partition": entry.partition, "model": entry.model,
                          "scope": entry.scope}, self.config.report.window_seconds))

    def _expiry_after_hits(self, entry: Entry, hits: int) -> float:
        """The expiry after `hits` more hits of `entry` (as read, with its stored hit count)."""
        dynamic = self.config.dynamic_ttl
        if not dynamic.enabled:
            return entry.expires_at
        ttl = grown_ttl(entry.ttl_seconds, dynamic.growth, entry.hits + hits,
                        dynamic.max_seconds)
        return time.time() + min(dynamic.max_seconds, max(dynamic.min_seconds, ttl))

    async def _write_bookkeeping(self, batch: Batch) -> None:
        await self.backend.book(batch)

    async def flush(self) -> None:
        """Write the gathered bookkeeping now (before reading counters or served records)."""
        await self.book.flush()

    # -- store -------------------------------------------------------------------------------

    async def store_json(self, services: Services, call: Call, payload: dict[str, Any],
                         data: bytes, cost: float) -> None:
        record = call.record
        if record is None or record.status != 200 or not cacheable_json(payload):
            return
        await self._store(services, call, payload, cost)

    async def store_stream(self, services: Services, call: Call, chunks: list[bytes],
                           cost: float) -> None:
        """Only complete streams reach here; anything that doesn't assemble is not stored."""
        record = call.record
        if record is None or record.error is not None:
            return
        usage = {"prompt_tokens": record.input_tokens + record.cached_input_tokens,
                 "completion_tokens": record.output_tokens,
                 "total_tokens": record.input_tokens + record.cached_input_tokens
                 + record.output_tokens}
        completion = assemble(chunks, usage)
        if completion is not None:
            await self._store(services, call, completion, cost)

    async def _store(self, services: Services, call: Call, completion: dict[str, Any],
                     cost: float) -> None:
        state: Lookup | None = call.cache_state
        if state is None:
            return
        if state.settings.mode == "shadow":
            await self._judge_shadow(state, completion)
        if not state.controls.store:
            return
        try:
            await self._put(state, completion, cost)
        except BACKEND_ERRORS as exc:
            log.warning("answer not cached: %s", exc)

    async def _put(self, state: Lookup, completion: dict[str, Any], cost: float) -> None:
        key, settings = state.key, state.settings
        completion_tokens = (completion.get("usage") or {}).get("completion_tokens")
        if not isinstance(completion_tokens, int):
            return  # without a token count no request's limit can be checked against it
        text_hash, cut_limit = key.text_hash, COMPLETE
        vector, tokens = state.vector, state.tokens
        if any(choice.get("finish_reason") == "length" for choice in completion["choices"]):
            if state.limit is None:
                return  # cut by the model's own context: not worth keeping
            # exact lookups with the same limit only; the complete answer stays where it is
            text_hash, cut_limit, vector = cut_hash(key.text_hash, state.limit), state.limit, None
        elif vector is None and settings.mode != "exact":
            vector, tokens = await self._embed(key.text)
        if vector is not None and tokens is not None:
            self.token_states.put(key.text_hash, tokens)
        now = time.time()
        entry = Entry(id=uuid.uuid4().hex[:16], scope=key.scope, partition=key.partition,
                      owner=key.owner, department=state.department, model=key.model,
                      text=key.text, text_hash=text_hash, response=orjson.dumps(completion),
                      cost=cost, created=now, expires_at=now + settings.ttl_seconds,
                      ttl_seconds=settings.ttl_seconds, task=state.task,
                      completion_tokens=completion_tokens, cut_limit=cut_limit)
        evicted = await self.backend.put(entry, vector, settings.max_size)
        if evicted:
            self.book.count({stats.plain_field("evicted", state.department, key.model): evicted})

    async def _judge_shadow(self, state: Lookup, completion: dict[str, Any]) -> None:
        """Would the shadow hit have been a plausible answer? The match rule's decision on its
        best candidate and the LLM judge's verdict are scored the same way, so a rejected
        candidate whose answer was plausible shows up as a possible missed hit."""
        score = ShadowScore(self.embedder, self.config.shadow_plausible_similarity, completion)
        fields = await score.fields(state)
        if not fields:
            return
        try:
            await self.backend.incr(fields)
        except BACKEND_ERRORS as exc:
            log.warning("shadow estimate not recorded: %s", exc)

    async def close(self) -> None:
        await self.book.close()
        if self.embedder is not None:
            await self.embedder.aclose()
        await self.backend.close()
