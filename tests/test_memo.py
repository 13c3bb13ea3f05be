"""The bounded memo: found values come back; at the limit everything is forgotten."""

from __future__ import annotations

from proxy.memo import BoundedMemo


def test_put_get_and_clear_at_the_limit() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(limit=3)
    for i, key in enumerate("abc"):
        assert memo.put(key, i) == i
    assert (memo.get("a"), memo.get("c"), len(memo)) == (0, 2, 3)
    memo.put("d", 3)  # the fourth key: the memo starts over
    assert (memo.get("a"), memo.get("d"), len(memo)) == (None, 3, 1)


def test_request_controlled_models_keep_the_allow_memo_bounded() -> None:
    from proxy.runtime.services import Services

    field = Services.__dataclass_fields__["allow_cache"]
    memo = field.default_factory()  # type: ignore[misc]
    for i in range(10_000):
        memo.put(("sales", f"model-{i}"), True)
    assert len(memo) <= memo.limit


def test_a_body_is_remembered_by_its_json_unless_too_large_or_not_json() -> None:
    from proxy.memo import MEMO_BODY_BYTES, body_shape

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert body_shape(body, 60) == b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    assert body_shape(body, MEMO_BODY_BYTES + 1) is None  # not even encoded
    assert body_shape({"content": "x" * MEMO_BODY_BYTES}, 10) is None  # its JSON is too large
    assert body_shape({"n": {1, 2}}, 10) is None  # a set is not JSON
