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
