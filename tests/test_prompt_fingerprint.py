"""The prompt fingerprint: prefix hashes compare calls without their text; breakpoints are noticed."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from langfuse_openrouter_callbacks._prompt_fingerprint import PromptFingerprint, fingerprint

HANDBOOK = "Refunds take 14 days. " * 200
SYSTEM = {"role": "system", "content": HANDBOOK}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]

texts = st.text(min_size=0, max_size=40)
parts = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, texts),
    st.builds(lambda u: {"type": "image_url", "image_url": {"url": u}}, texts),
)
messages = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["system", "user", "assistant", "tool"]),
    st.one_of(texts, st.lists(parts, min_size=1, max_size=3)),
)
conversations = st.lists(messages, min_size=1, max_size=8)


def test_one_hash_per_message_each_12_hex_digits() -> None:
    found = fingerprint([SYSTEM, {"role": "user", "content": "hi"}])
    assert isinstance(found, PromptFingerprint)
    assert len(found.prefix_hashes) == 2
    assert all(re.fullmatch("[0-9a-f]{12}", h) for h in found.prefix_hashes)
    assert found.cache_control is False


def test_a_follow_up_shares_the_hashes_of_the_prompt_it_extends() -> None:
    first = fingerprint([SYSTEM, {"role": "user", "content": "How long do refunds take?"}])
    follow_up = fingerprint(
        [
            SYSTEM,
            {"role": "user", "content": "How long do refunds take?"},
            {"role": "assistant", "content": "14 days."},
            {"role": "user", "content": "And exchanges?"},
        ]
    )
    assert follow_up.prefix_hashes[:2] == first.prefix_hashes
    assert fingerprint([SYSTEM]).prefix_hashes == first.prefix_hashes[:1]


def test_a_timestamp_early_in_the_system_prompt_changes_every_hash() -> None:
    question = {"role": "user", "content": "hi"}
    at_nine = fingerprint([{"role": "system", "content": "It is 09:00. " + HANDBOOK}, question])
    at_ten = fingerprint([{"role": "system", "content": "It is 10:00. " + HANDBOOK}, question])
    assert not set(at_nine.prefix_hashes) & set(at_ten.prefix_hashes)


def test_tools_are_part_of_the_prefix_and_their_order_counts() -> None:
    other = {"type": "function", "function": {"name": "refund", "parameters": {"type": "object"}}}
    plain = fingerprint([SYSTEM])
    with_tools = fingerprint([SYSTEM], [TOOLS[0], other])
    assert plain != with_tools
    assert with_tools == fingerprint([SYSTEM], [TOOLS[0], other])
    assert with_tools != fingerprint([SYSTEM], [other, TOOLS[0]])


def test_breakpoints_are_noticed_but_do_not_change_the_prefix() -> None:
    marked = {
        "role": "system",
        "content": [{"type": "text", "text": HANDBOOK, "cache_control": {"type": "ephemeral"}}],
    }
    with_breakpoint = fingerprint([marked])
    assert with_breakpoint.cache_control is True
    assert with_breakpoint.prefix_hashes == fingerprint([SYSTEM]).prefix_hashes  # str = one text part
    assert fingerprint([SYSTEM], cache_control={"type": "ephemeral"}).cache_control is True  # top-level
    assert fingerprint([{**SYSTEM, "cache_control": {"type": "ephemeral"}}]).cache_control is True


def test_tool_calls_and_ids_are_part_of_the_message() -> None:
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "f"}}]}
    other = {**call, "tool_calls": [{"id": "c2", "function": {"name": "f"}}]}
    assert fingerprint([SYSTEM, call]).prefix_hashes[1] != fingerprint([SYSTEM, other]).prefix_hashes[1]
    answer = {"role": "tool", "content": "ok", "tool_call_id": "c1"}
    assert fingerprint([answer]) != fingerprint([{**answer, "tool_call_id": "c2"}])


def test_odd_entries_are_hashed_by_their_type_never_read() -> None:
    class Secret:
        def __str__(self) -> str:
            raise AssertionError("str() of a user's object")

        __repr__ = __str__

    found = fingerprint([SYSTEM, Secret(), {"role": "user", "content": [Secret(), 3]}], [Secret()])
    assert len(found.prefix_hashes) == 3


@settings(max_examples=200, deadline=None)
@given(conversations, conversations)
def test_the_same_prefix_gives_the_same_hashes(prefix: list, rest: list) -> None:
    whole = fingerprint(prefix + rest).prefix_hashes
    assert whole[: len(prefix)] == fingerprint(prefix).prefix_hashes
    assert len(whole) == len(prefix) + len(rest)


@settings(max_examples=200, deadline=None)
@given(conversations, st.data())
def test_a_change_in_message_k_changes_the_hashes_from_k_on(conversation: list, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(conversation) - 1))
    changed = [dict(m) for m in conversation]
    changed[k]["content"] = data.draw(texts.filter(lambda t: t != conversation[k]["content"]))
    before, after = fingerprint(conversation).prefix_hashes, fingerprint(changed).prefix_hashes
    if _canonical_text(conversation[k]) == _canonical_text(changed[k]):
        return  # [one text part "x"] and "x" are the same prompt
    assert before[:k] == after[:k]
    assert all(b != a for b, a in zip(before[k:], after[k:], strict=True))


@settings(max_examples=200, deadline=None)
@given(conversations)
def test_no_content_in_the_output(conversation: list) -> None:
    found = fingerprint(conversation, TOOLS)
    written = json.dumps([found.cache_control, list(found.prefix_hashes)])
    assert all(re.fullmatch("[0-9a-f]{12}", h) for h in found.prefix_hashes)
    for message in conversation:
        content = message["content"]
        for text in [content] if isinstance(content, str) else [p.get("text", "") for p in content]:
            if len(text) >= 13:  # longer than a hash: could only be there if copied
                assert text not in written


def _canonical_text(message: dict) -> object:
    content = message["content"]
    if isinstance(content, str):
        return [content]
    if all(p.get("type") == "text" for p in content):
        return [p["text"] for p in content]
    return content


def test_a_breakpoint_naming_its_lifetime_gives_it_in_seconds() -> None:
    def marked(ttl: str | None) -> dict:
        marker = {"type": "ephemeral"} if ttl is None else {"type": "ephemeral", "ttl": ttl}
        return {"role": "system", "content": [{"type": "text", "text": HANDBOOK, "cache_control": marker}]}

    assert fingerprint([marked(None)]).cache_ttl is None  # the provider's default
    assert fingerprint([marked("1h")]).cache_ttl == 3600
    assert (
        fingerprint([marked("5m"), {"role": "user", "content": [{"type": "text", "text": "q"}]}]).cache_ttl
        == 300
    )
    assert fingerprint([marked("5m")], cache_control={"type": "ephemeral", "ttl": "1h"}).cache_ttl == 3600
    assert fingerprint([marked("forever")]).cache_ttl is None
