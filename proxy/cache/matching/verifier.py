"""Judge what differs between two parsed texts.

`differences` returns every critical kind of difference it finds (an empty tuple means the texts
differ only in function words, filler, word forms or synonyms). Names are stable reason strings.
"""

from __future__ import annotations

from proxy.cache.matching import lexicon as lx
from proxy.cache.matching.guards import Parsed, Token, stem

NUMBER = "number_mismatch"
UNIT = "unit_mismatch"
ENTITY = "entity_mismatch"
NEGATION = "negation_mismatch"
ANTONYM = "antonym"
ROLE_SWAP = "role_swap"
ORDER_SWAP = "order_swap"
SUBSTITUTION = "content_substitution"
WORD_SWAP = "word_substitution"
INSERTION = "content_insertion"
LONG_TEXT_CHANGE = "long_text_change"
VOICE_FLIP = "voice_flip"
# differences that always change the meaning (the soft ones are weighed by similarity)
CRITICAL: tuple[str, ...] = (NUMBER, UNIT, ENTITY, NEGATION, ANTONYM, ROLE_SWAP, ORDER_SWAP,
                             LONG_TEXT_CHANGE)

# Past this many content words one changed word barely moves the cosine, so similarity can no
# longer vouch for a reworded instruction ("keep it formal" -> "make it friendly").
_LONG_TEXT_CONTENT_WORDS = 10

_ARGUMENT_KINDS = frozenset({"content", "entity", "num", "unit"})
_BE_VERBS = frozenset({"is", "are", "was", "were", "be", "been", "being", "get", "gets", "got"})
_COORDINATORS = frozenset({"and", "or", "vs", "versus", "&"})  # not "with": replace X with Y
_PASSIVE_SPAN = 3  # "was [quickly] acquired by": the be-verb this close before the agent's "by"
_ROLE_LOOKBACK = 4


def differences(a: Parsed, b: Parsed) -> tuple[str, ...]:
    """Every critical difference between `a` and `b`, in a fixed order."""
    found: list[str] = []
    for kind, reason in (("num", NUMBER), ("unit", UNIT)):
        if _of_kind(a, kind) != _of_kind(b, kind):
            found.append(reason)
    if _missing_entities(a, b) or _missing_entities(b, a):
        found.append(ENTITY)
    antonym = _antonyms(a, b)
    balancing: set[str] = set()
    if _negation_count(a) != _negation_count(b):
        if antonym:
            balancing, antonym = set(antonym), set()  # "not safe" == "toxic": two flips cancel
        else:
            balancing = _negation_balance(a, b)
            found += [] if balancing else [NEGATION]
    swapped = _role_swapped(a, b)
    order = _order_swapped(a, b) or _exchanged(a, b)
    if antonym and (swapped or order) and all(w in lx.CONVERSE_WORDS for w in antonym):
        balancing |= antonym  # "A beat B" == "B lost to A": the swap and the antonym cancel
    else:
        found += [ANTONYM] if antonym else []
        found += [ROLE_SWAP] if swapped else []
        found += [ORDER_SWAP] if order and not swapped else []
    found += _content_change(a, b, ignore=balancing | {stem(w) for w in balancing})
    found += [VOICE_FLIP] if voice_flipped(a, b) else []
    return tuple(found)


def _of_kind(p: Parsed, kind: str) -> frozenset[str]:
    return frozenset(t.stem for t in p.tokens if t.kind == kind)


def _missing_entities(a: Parsed, b: Parsed) -> bool:
    present = set(b.stems) | {t.norm for t in b.tokens}
    return any(t.kind == "entity" and t.stem not in present for t in a.tokens)


def _negation_count(p: Parsed) -> int:
    return sum(1 for t in p.tokens if t.kind == "neg")


def _negation_balance(a: Parsed, b: Parsed) -> set[str]:
    """Words that carry the extra negation on the other side ('unsafe', 'toxic'), else empty."""
    more, fewer = (a, b) if _negation_count(a) > _negation_count(b) else (b, a)
    extra = {t.norm for t in fewer.tokens} - {t.norm for t in more.tokens}
    implicit = extra & lx.IMPLICIT_NEGATIVE
    if implicit:
        return implicit | (_content(more) - _content(fewer))
    more_stems = set(more.stems)
    for word in extra:
        root = _negative_prefix_root(word, more_stems)
        if root is not None:
            return {word, root}
    return set()


def _negative_prefix_root(word: str, stems: set[str]) -> str | None:
    """'unsafe' balances 'not safe', 'dislike' balances 'not like': returns the root."""
    for prefix in ("un", "in", "im", "il", "ir", "dis", "non"):
        root = stem(word[len(prefix) :])
        if word.startswith(prefix) and root in stems:
            return root
    return None


def _antonyms(a: Parsed, b: Parsed) -> set[str]:
    words_a = {t.norm for t in a.tokens}
    words_b = {t.norm for t in b.tokens}
    only_a, only_b = words_a - words_b, words_b - words_a
    hits: set[str] = set()
    for x in only_a:
        for y in only_b:
            if frozenset((x, y)) in lx.ANTONYMS:
                hits.update((x, y))
    return hits


def _single_positions(p: Parsed, shared: set[str]) -> dict[str, int]:
    seen: dict[str, int] = {}
    repeated: set[str] = set()
    for i, t in enumerate(p.tokens):
        if t.stem in shared and t.kind in _ARGUMENT_KINDS:
            if t.stem in seen:
                repeated.add(t.stem)
            seen[t.stem] = i
    return {k: v for k, v in seen.items() if k not in repeated}


def _role(tokens: tuple[Token, ...], index: int) -> str | None:
    for t in reversed(tokens[max(0, index - _ROLE_LOOKBACK) : index]):
        if t.kind == "role":
            return t.norm
        if t.kind == "punct" or t.kind == "neg":
            return None
    return None


def _shared_arguments(a: Parsed, b: Parsed) -> tuple[dict[str, int], dict[str, int]]:
    shared = {t.stem for t in a.tokens if t.kind in _ARGUMENT_KINDS} & set(b.stems)
    pa, pb = _single_positions(a, shared), _single_positions(b, shared)
    common = pa.keys() & pb.keys()
    return {k: pa[k] for k in common}, {k: pb[k] for k in common}


def _role_swapped(a: Parsed, b: Parsed) -> bool:
    """A shared argument moved from one role to another ("from X" -> "to X")."""
    pa, pb = _shared_arguments(a, b)
    for word in pa:
        ra, rb = _role(a.tokens, pa[word]), _role(b.tokens, pb[word])
        if ra is not None and rb is not None and ra != rb:
            return True
    return False


def _order_swapped(a: Parsed, b: Parsed) -> bool:
    """Two shared arguments traded places, changing roles ("A faster than B" -> "B ... than A")
    or as two names around a verb ("Germany beat Brazil" -> "Brazil beat Germany")."""
    pa, pb = _shared_arguments(a, b)
    words = sorted(pa, key=pa.__getitem__)
    for i, x in enumerate(words):
        for y in words[i + 1 :]:
            if pb[x] < pb[y]:
                continue
            if _symmetric_between(a, pa[x], pa[y]) or _symmetric_between(b, pb[y], pb[x]):
                continue
            names = a.tokens[pa[x]].kind == "entity" and a.tokens[pa[y]].kind == "entity"
            if names and not _roles_kept(a, b, (pa[x], pb[x]), (pa[y], pb[y])):
                return True
            if _roles_exchanged(a, b, pa[x], pa[y], pb[x], pb[y]):
                return True
    return False


def _exchanged(a: Parsed, b: Parsed) -> bool:
    """B is A with two spans traded ("cats chase mice" -> "mice chase cats")."""
    sa, sb = a.stems, b.stems
    if len(sa) != len(sb) or sorted(sa) != sorted(sb):
        return False
    start = 0
    while start < len(sa) and sa[start] == sb[start]:
        start += 1
    end = len(sa)
    while end > start and sa[end - 1] == sb[end - 1]:
        end -= 1
    mid_a, mid_b = sa[start:end], sb[start:end]
    for x in range(1, len(mid_a)):
        for y in range(1, len(mid_a) - x + 1):
            middle = mid_a[x : len(mid_a) - y]
            if mid_b == mid_a[len(mid_a) - y :] + middle + mid_a[:x]:
                # "from A to B" -> "to B from A": each argument took its role marker along.
                roles_travel = mid_a[0] in lx.ROLE_MARKERS and mid_a[-y] in lx.ROLE_MARKERS
                symmetric = any(w in lx.SYMMETRIC_CONNECTORS for w in middle)
                return not (roles_travel or symmetric)
    return False


def _symmetric_between(p: Parsed, start: int, end: int) -> bool:
    between = p.tokens[start + 1 : end]
    return any(t.norm in lx.SYMMETRIC_CONNECTORS or t.kind == "punct" for t in between)


def _roles_kept(a: Parsed, b: Parsed, *positions: tuple[int, int]) -> bool:
    """Every argument keeps the same non-empty role ("from X to Y" -> "to Y from X")."""
    for pos_a, pos_b in positions:
        role = _role(a.tokens, pos_a)
        if role is None or role != _role(b.tokens, pos_b):
            return False
    return True


def _roles_exchanged(a: Parsed, b: Parsed, ax: int, ay: int, bx: int, by: int) -> bool:
    """x took y's role and y took x's ("dolphin faster than shark" -> "shark ... than dolphin")."""
    rax, ray = _role(a.tokens, ax), _role(a.tokens, ay)
    return rax != ray and rax == _role(b.tokens, by) and ray == _role(b.tokens, bx)


def _content(p: Parsed) -> set[str]:
    return {t.stem for t in p.tokens if t.kind == "content" and not _is_filler(t)}


def _is_filler(t: Token) -> bool:
    return t.norm in lx.FILLER or t.stem in lx.FILLER or t.norm in lx.STOPWORDS


def _content_change(a: Parsed, b: Parsed, ignore: set[str]) -> list[str]:
    all_a, all_b = set(a.stems) | ignore, set(b.stems) | ignore
    only_a = {w for w in _content(a) - all_b if w not in ignore}
    only_b = {w for w in _content(b) - all_a if w not in ignore}
    if (only_a or only_b) and max(len(_content(a)), len(_content(b))) > _LONG_TEXT_CONTENT_WORDS:
        return [LONG_TEXT_CHANGE]
    if len(only_a) == 1 and len(only_b) == 1:
        return [WORD_SWAP]  # one word traded for another: the typical "cats" -> "dogs" change
    if only_a and only_b:
        return [SUBSTITUTION]
    if only_a or only_b:
        return [INSERTION]
    return []


def voice_flipped(a: Parsed, b: Parsed) -> bool:
    """One side is passive with an agent ("X was acquired by Y"), the other active with the same
    words in the same order ("X acquired Y"): the voice changed but the arguments did not move,
    so who did what to whom is reversed. The meaning-keeping passive moves them ("Y acquired
    X"). Not a flip: no subject before the be-verb ("what is meant by X"), or the verb passive on
    both sides ("get attached by" / "get attached through")."""
    agent_a, agent_b = _passive_agent(a), _passive_agent(b)
    if (agent_a is None) == (agent_b is None):
        return False
    passive, active, (be, verb) = (a, b, agent_a) if agent_a else (b, a, agent_b)  # type: ignore[misc]
    if any(t.norm == "by" for t in active.tokens):
        return False
    pa, pb = _shared_arguments(passive, active)
    if len(pa) < 2 or sorted(pa, key=pa.__getitem__) != sorted(pb, key=pb.__getitem__):
        return False
    subject = any(i < be for i in pa.values())
    verb_stem = passive.tokens[verb].stem
    active_verb = [i for i, t in enumerate(active.tokens) if t.stem == verb_stem]
    return subject and any(i > 0 and active.tokens[i - 1].norm not in _BE_VERBS
                           for i in active_verb)


def _passive_agent(p: Parsed) -> tuple[int, int] | None:
    """Positions of the be-verb and the verb of "was [quickly] acquired by", or None."""
    for i, t in enumerate(p.tokens):
        if t.norm != "by" or i == 0 or p.tokens[i - 1].kind != "content":
            continue
        for j in range(max(0, i - _PASSIVE_SPAN), i - 1):
            if p.tokens[j].norm in _BE_VERBS:
                return j, i - 1
    return None


def coordination_reordered(a: Parsed, b: Parsed) -> bool:
    """B is A with the two words around one "and"/"or"/"vs" traded ("the difference between
    Java and Rust" / "... between Rust and Java") and nothing else changed: the same question.
    (Spans longer than a word, or "born in Ohio and raised in Texas", are not this.)"""
    sa, sb = a.stems, b.stems
    if len(sa) != len(sb):
        return False
    diff = [i for i, (x, y) in enumerate(zip(sa, sb, strict=True)) if x != y]
    if len(diff) != 2 or diff[1] != diff[0] + 2:
        return False
    i, j = diff
    words = [t for t in a.tokens if t.kind != "punct"]
    arguments = words[i].kind in _ARGUMENT_KINDS and words[j].kind in _ARGUMENT_KINDS
    return arguments and sa[i] == sb[j] and sa[j] == sb[i] and sa[i + 1] in _COORDINATORS
