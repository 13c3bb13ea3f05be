"""Routing rules from YAML and the pure decision: (rules, request facts) -> model + fallbacks.

`select_route` walks the rules in file order; the first rule whose every condition holds fires.
The decision carries a per-rule explanation (why each checked rule matched or not), which is what
`POST /admin/route/explain` returns and what `x-meterline-route` names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from proxy.config.errors import ConfigError, describe_validation_error, read_yaml
from proxy.gateway.reliability import Reliability
from proxy.memo import BoundedMemo, body_shape

DEFAULT_RULE = "default"
# the route of the cache's LLM judge calls (proxy.cache.judge): reports tell its spend apart by it
JUDGE_ROUTE = "cache-judge"
# route names records carry that no rule may take
RESERVED_RULE_NAMES = (DEFAULT_RULE, JUDGE_ROUTE)
TASK_HEADER = "x-meterline-task"
USER_HEADER = "x-meterline-user"
ROUTE_HEADER = "x-meterline-route"
IMAGE_TOKENS = 85  # what one low-detail image costs; good enough for a size heuristic
RULE_NAME = r"^[A-Za-z0-9_.:-]{1,64}$"
TASK_NAME = r"^[a-z0-9_.:-]{1,40}$"  # what cache analytics can show as a task label

M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class RouteInput:
    """The facts about one request that routing and experiments look at."""

    model: str
    department: str
    messages: Sequence[Mapping[str, Any]]
    tools: bool = False
    task: str | None = None
    user: str = ""
    prompt_tokens: int = 0
    images: int | None = None  # image parts in the messages; None: count them when needed

    @classmethod
    def from_request(
        cls, body: Mapping[str, Any], department: str, headers: Mapping[str, str], key_id: str
    ) -> RouteInput:
        """Build from a chat body; `headers` must be case-insensitive (Starlette) or lower-case."""
        messages = body.get("messages") or []
        images = count_images(messages)
        return cls(
            model=str(body.get("model", "")),
            department=department,
            messages=messages,
            tools=bool(body.get("tools") or body.get("functions")),
            task=headers.get(TASK_HEADER) or None,
            user=resolve_user(body.get("user"), headers.get(USER_HEADER), key_id),
            prompt_tokens=estimate_tokens(messages, images),
            images=images,
        )


def resolve_user(body_user: object, header_user: str | None, key_id: str) -> str:
    """User id for sticky assignment: body `user`, else `x-meterline-user`, else the key id."""
    if isinstance(body_user, str) and body_user:
        return body_user
    return header_user or key_id


def _parts(content: object) -> Iterable[Mapping[str, Any]]:
    if isinstance(content, list):
        return (p for p in content if isinstance(p, Mapping))
    return ()


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one message (string content or the text parts of a parts list)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(str(p.get("text", "")) for p in _parts(content) if p.get("type") == "text")


def count_images(messages: Sequence[Mapping[str, Any]]) -> int:
    return sum(
        1 for m in messages for p in _parts(m.get("content")) if p.get("type") == "image_url"
    )


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def estimate_tokens(messages: Sequence[Mapping[str, Any]], images: int | None = None) -> int:
    """Cheap prompt size: ~4 characters per token, 4 tokens per message, 85 per image
    (`images`: the count of image parts when the caller already has it)."""
    chars = 0
    for message in messages:
        chars += len(message_text(message))
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                chars += len(str(function.get("name", "")))
                chars += len(str(function.get("arguments", "")))
    if images is None:
        images = count_images(messages)
    return chars // 4 + 4 * len(messages) + 3 + IMAGE_TOKENS * images


class Match(BaseModel):
    """Conditions of one rule. All given conditions must hold; a list matches any of its items."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    department: tuple[str, ...] | None = None
    model: tuple[str, ...] | None = None  # shell-style patterns, e.g. "gpt-4o*"
    task: tuple[str, ...] | None = None
    min_prompt_tokens: int | None = Field(default=None, ge=0)
    max_prompt_tokens: int | None = Field(default=None, ge=0)
    tools: bool | None = None
    images: bool | None = None
    keywords: tuple[str, ...] = ()  # any of them, case-insensitive, whole words; fast
    regex: re.Pattern[str] | None = None  # searched in the last user message; (?i) ignores case

    @field_validator("regex", mode="before")
    @classmethod
    def _compile(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from exc
        return value

    @field_validator("keywords")
    @classmethod
    def _no_blank_keywords(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not k.strip() for k in value):
            raise ValueError("keywords must not be blank")
        return value

    @model_validator(mode="after")
    def _check_range(self) -> Match:
        low, high = self.min_prompt_tokens, self.max_prompt_tokens
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_prompt_tokens {low} is above max_prompt_tokens {high}")
        return self

    # cached_property, not PrivateAttr: pydantic routes private attributes through __getattr__,
    # which is slow on the request path; a cached value sits in the instance __dict__.
    @cached_property
    def folded_keywords(self) -> tuple[str, ...]:
        return tuple(k.strip().casefold() for k in self.keywords)

    @cached_property
    def keyword_re(self) -> re.Pattern[str]:
        return re.compile("|".join(_bounded(k) for k in self.folded_keywords))

    def keyword_in(self, folded_text: str) -> str | None:
        """The first keyword found as a whole word in casefolded text (substring prefilter first,
        because a scan with `re` over a long prompt costs ~50x more than `in`)."""
        if not any(k in folded_text for k in self.folded_keywords):
            return None
        found = self.keyword_re.search(folded_text)
        return None if found is None else found.group(0)


def _bounded(word: str) -> str:
    """Whole-word pattern; edges that are not word characters (as in "c++" or "```") need none."""
    head = r"(?<!\w)" if re.match(r"\w", word[0]) else ""
    tail = r"(?!\w)" if re.match(r"\w", word[-1]) else ""
    return f"{head}{re.escape(word)}{tail}"


class Rule(BaseModel):
    """One routing rule: when `match` holds, send to `target`, then try `fallbacks` in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=RULE_NAME)
    description: str = ""
    match: Match = Match()
    target: str = Field(min_length=1)
    fallbacks: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check_fallbacks(self) -> Rule:
        chain = (self.target, *self.fallbacks)
        if len(set(chain)) != len(chain):
            raise ValueError(f"target and fallbacks repeat a model: {list(chain)}")
        return self


class RoutingRules(BaseModel):
    """The whole `rules/routing.yaml`: ordered rules (first match wins) and the retry,
    timeout and cooldown settings of the routed path (`reliability`, defaults when absent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[Rule, ...] = ()
    reliability: Reliability = Reliability()
    # x-meterline-task values counted by name in records and cache analytics (with those the
    # rules and experiments name); any other value counts as "other", so clients can't grow them
    tasks: tuple[Annotated[str, Field(pattern=TASK_NAME)], ...] = ()

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1}
                       | (set(RESERVED_RULE_NAMES) & set(names)))
        if dupes:
            reserved = " or ".join(f"'{n}'" for n in RESERVED_RULE_NAMES)
            raise ValueError(f"rule names must be unique and not {reserved}: {dupes}")
        return rules

    def models(self) -> set[str]:
        return {m for r in self.rules for m in (r.target, *r.fallbacks)}

    def task_names(self) -> set[str]:
        return set(self.tasks) | {t for r in self.rules for t in (r.match.task or ())}

    @cached_property
    def candidates_memo(self) -> BoundedMemo[tuple[str, str, str | None],
                                              tuple[tuple[Rule, ...], bool]]:
        return BoundedMemo()

    @cached_property
    def routes_memo(self) -> BoundedMemo[tuple[bytes, str, str | None], RememberedRoute]:
        return BoundedMemo(MEMO_ROUTES)

    def candidates(self, department: str, model: str,
                   task: str | None) -> tuple[tuple[Rule, ...], bool]:
        """The rules whose department, model and task conditions hold for this kind of request,
        in order, and whether any of them looks at the prompt text. Remembered per kind (a new
        config is a new object): per request only the prompt-dependent conditions are left."""
        key = (department, model, task)
        memo = self.candidates_memo
        found = memo.get(key)
        if found is None:
            rules = tuple(r for r in self.rules if _static_holds(r.match, department, model, task))
            needs_text = any(r.match.keywords or r.match.regex is not None for r in rules)
            found = memo.put(key, (rules, needs_text))
        return found


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """Why one rule did or did not match."""

    rule: str
    matched: bool
    reasons: tuple[str, ...]


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class RouteDecision:
    """Where a request goes: `rule` is the fired rule's name (or "default")."""

    rule: str
    model: str
    fallbacks: tuple[str, ...]
    explanation: tuple[RuleCheck, ...]

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.model, *self.fallbacks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "model": self.model,
            "fallbacks": list(self.fallbacks),
            "explanation": [
                {"rule": c.rule, "matched": c.matched, "reasons": list(c.reasons)}
                for c in self.explanation
            ],
        }


@dataclass(slots=True)  # built per request: a frozen __init__ costs ~6x
class _Facts:
    inp: RouteInput
    text: str
    folded: str
    images: bool


def _one_of(label: str, value: str | None, allowed: tuple[str, ...], glob: bool = False) -> str:
    hit = value is not None and any(fnmatchcase(value, a) if glob else value == a for a in allowed)
    verb = "in" if hit else "not in"
    return f"{'+' if hit else '-'}{label} {value!r} {verb} {list(allowed)}"


def _flag(label: str, actual: bool, wanted: bool) -> str:
    return f"{'+' if actual == wanted else '-'}{label}={actual} (rule wants {wanted})"


def _checks(match: Match, facts: _Facts) -> list[str]:
    """Every condition of `match` as '+reason' (holds) or '-reason' (fails)."""
    inp, out = facts.inp, []
    if match.department is not None:
        out.append(_one_of("department", inp.department, match.department))
    if match.model is not None:
        out.append(_one_of("model", inp.model, match.model, glob=True))
    if match.task is not None:
        out.append(_one_of("task", inp.task, match.task))
    if match.min_prompt_tokens is not None:
        ok = inp.prompt_tokens >= match.min_prompt_tokens
        out.append(f"{'+' if ok else '-'}prompt_tokens {inp.prompt_tokens} "
                   f"{'>=' if ok else '<'} {match.min_prompt_tokens}")
    if match.max_prompt_tokens is not None:
        ok = inp.prompt_tokens <= match.max_prompt_tokens
        out.append(f"{'+' if ok else '-'}prompt_tokens {inp.prompt_tokens} "
                   f"{'<=' if ok else '>'} {match.max_prompt_tokens}")
    if match.tools is not None:
        out.append(_flag("tools", inp.tools, match.tools))
    if match.images is not None:
        out.append(_flag("images", facts.images, match.images))
    return out


def _text_checks(match: Match, facts: _Facts) -> list[str]:
    out = []
    if match.keywords:
        found = match.keyword_in(facts.folded)
        out.append(f"+keyword {found!r} in last user message" if found else
                   f"-none of keywords {list(match.keywords)} in last user message")
    if match.regex is not None:
        hit = match.regex.search(facts.text) is not None
        out.append(f"{'+' if hit else '-'}regex '{match.regex.pattern}' "
                   f"{'matches' if hit else 'does not match'} last user message")
    return out


def check_rule(rule: Rule, facts: _Facts) -> RuleCheck:
    """Text conditions (keywords, regex) are only scanned when the cheap ones hold."""
    checks = _checks(rule.match, facts)
    failed = tuple(c[1:] for c in checks if c[0] == "-")
    if not failed:
        checks += _text_checks(rule.match, facts)
        failed = tuple(c[1:] for c in checks if c[0] == "-")
    if failed:
        return RuleCheck(rule.name, False, failed)
    return RuleCheck(rule.name, True, tuple(c[1:] for c in checks) or ("no conditions",))


def _static_holds(match: Match, department: str, model: str, task: str | None) -> bool:
    """The conditions fixed by who asks for which model and task (see RoutingRules.candidates)."""
    if match.department is not None and department not in match.department:
        return False
    if match.model is not None and not any(fnmatchcase(model, m) for m in match.model):
        return False
    return match.task is None or task in match.task


def _holds(match: Match, facts: _Facts) -> bool:
    """The prompt-dependent conditions of a candidate rule, as in `_checks` + `_text_checks`
    but without building explanations: this runs on every request."""
    inp = facts.inp
    if match.min_prompt_tokens is not None and inp.prompt_tokens < match.min_prompt_tokens:
        return False
    if match.max_prompt_tokens is not None and inp.prompt_tokens > match.max_prompt_tokens:
        return False
    if match.tools is not None and inp.tools != match.tools:
        return False
    if match.images is not None and facts.images != match.images:
        return False
    if match.keywords and match.keyword_in(facts.folded) is None:
        return False
    return match.regex is None or match.regex.search(facts.text) is not None


# (prompt tokens, image parts, tools asked for, the decision) of a body routed before
RememberedRoute = tuple[int, int | None, bool, "RouteDecision"]
# bodies remembered with their route, per rules object: at most MEMO_ROUTES x MEMO_BODY_BYTES
MEMO_ROUTES = 256


def route_request(rules: RoutingRules, body: Mapping[str, Any], department: str,
                  headers: Mapping[str, str], key_id: str,
                  raw_size: int = 0) -> tuple[RouteInput, RouteDecision]:
    """The request path's RouteInput and select_route(explain=False), the prompt's facts and
    the decision remembered by the body's JSON, department and task (all a decision reads:
    the rules are a new object after a reload, with a new memo); the user is resolved every time.
    The same body comes back on every cache hit: its text need not be measured and scanned.
    `raw_size`: the body's size as received; a body too large to remember is not encoded."""
    shape = body_shape(body, raw_size)
    task = headers.get(TASK_HEADER) or None
    if shape is None:
        inp = RouteInput.from_request(body, department, headers, key_id)
        return inp, select_route(rules, inp, explain=False)
    found = rules.routes_memo.get((shape, department, task))
    if found is None:
        inp = RouteInput.from_request(body, department, headers, key_id)
        decision = select_route(rules, inp, explain=False)
        rules.routes_memo.put((shape, department, task),
                              (inp.prompt_tokens, inp.images, inp.tools, decision))
        return inp, decision
    prompt_tokens, images, tools, decision = found
    inp = RouteInput(model=str(body.get("model", "")), department=department,
                     messages=body.get("messages") or [], tools=tools, task=task,
                     user=resolve_user(body.get("user"), headers.get(USER_HEADER), key_id),
                     prompt_tokens=prompt_tokens, images=images)
    return inp, decision


def select_route(rules: RoutingRules, inp: RouteInput, *, explain: bool = True) -> RouteDecision:
    """First matching rule wins; without a match the requested model is used unchanged.
    With explain=False (the request path) the decision carries no per-rule explanation."""
    images = inp.images if inp.images is not None else count_images(inp.messages)
    if not explain:
        candidates, needs_text = rules.candidates(inp.department, inp.model, inp.task)
        if candidates:
            text = last_user_text(inp.messages) if needs_text else ""
            facts = _Facts(inp, text, text.casefold(), images > 0)
            for rule in candidates:
                if _holds(rule.match, facts):
                    return RouteDecision(rule.name, rule.target, rule.fallbacks, ())
        return RouteDecision(DEFAULT_RULE, inp.model, (), ())
    text = last_user_text(inp.messages)
    facts = _Facts(inp, text, text.casefold(), images > 0)
    checked: list[RuleCheck] = []
    for rule in rules.rules:
        check = check_rule(rule, facts)
        checked.append(check)
        if check.matched:
            return RouteDecision(rule.name, rule.target, rule.fallbacks, tuple(checked))
    none = RuleCheck(DEFAULT_RULE, True, ("no rule matched: requested model is used",))
    return RouteDecision(DEFAULT_RULE, inp.model, (), (*checked, none))


def parse_config(data: object, model: type[M], source: str) -> M:
    """Validate parsed YAML; on failure raise ConfigError naming file, field and value."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(source, exc)) from None


def load_yaml(path: str | Path, model: type[M]) -> M:
    path = Path(path)
    return parse_config(read_yaml(path), model, str(path))


def load(path: str | Path) -> RoutingRules:
    """Load and validate `rules/routing.yaml`."""
    return load_yaml(path, RoutingRules)


def scope_warnings(rules: RoutingRules, departments: set[str], models: set[str],
                   source: str) -> list[str]:
    """Conditions that name a department that does not exist or a model pattern that matches
    no model: such a rule can never fire for them (a typo, or a removed department)."""
    out: list[str] = []
    for i, rule in enumerate(rules.rules):
        out += [f"{source}: field 'rules[{i}].match.department' has value {d!r}: no such "
                f"department (known: {sorted(departments)})"
                for d in rule.match.department or () if d not in departments]
        out += [f"{source}: field 'rules[{i}].match.model' has value {m!r}: matches no model"
                for m in rule.match.model or ()
                if not any(fnmatchcase(name, m) for name in models)]
    return out


def check_models(rules: RoutingRules, known: set[str], source: str = "routing") -> None:
    """Raise ConfigError if a rule targets a model the proxy does not know."""
    problems = [
        f"  field 'rules[{i}].{'target' if m == r.target else 'fallbacks'}' has value {m!r}: "
        f"unknown model (known: {sorted(known)})"
        for i, r in enumerate(rules.rules)
        for m in (r.target, *r.fallbacks)
        if m not in known
    ]
    problems += [
        f"  field 'reliability.timeouts.{m}' has value {m!r}: unknown model "
        f"(known: {sorted(known)})"
        for m in rules.reliability.timeouts
        if m not in known
    ]
    if problems:
        raise ConfigError("\n".join([f"{source}: unknown models", *problems]))
