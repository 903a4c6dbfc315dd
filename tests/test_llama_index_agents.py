"""Agents and workflows under the global handler: real llama-index agents over HTTP, spans as exported.

`FunctionAgent`, `ReActAgent` and `AgentWorkflow` (llama_index.core.agent.workflow) and a custom
`Workflow`, each run against the local fake OpenRouter (tool calls in OpenAI's wire format, streamed as
the agents ask by default) with `set_global_handler()` on, and every assertion on the decoded OTLP spans
the real Langfuse client exported. Each app also runs without the handler: the user gets the same text.

What the runs look like to the handler (llama-index-core 0.14, llama-index-workflows 2): a span for the
run (`<Workflow>.run-<uuid>`, its instance the agent or workflow), one per step (`<Class>.<step>-<uuid>`,
bound to the step's event: `call_tool` gets a `ToolCall` with the LLM's `tool_kwargs`), the tool's own
`FunctionTool.acall` span inside `call_tool`, and two `astream_chat` spans per LLM request (the
`FunctionCallingLLM` wrapper and OpenAI's), whose end event arrives after both spans exited, once the
agent drained the stream. No `AgentToolCallEvent` is dispatched.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import llama_index.core
import pytest
from llama_index.core import Settings
from llama_index.core.agent.workflow import AgentStream, AgentWorkflow, FunctionAgent, ReActAgent
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import Context, Event, StartEvent, StopEvent, Workflow, step
from llama_index.llms.openrouter import OpenRouter

from langfuse_openrouter_callbacks.llama_index import set_global_handler, trace_attributes
from tests.scenario import CACHED_CALL, DATED, EXPECTED_USAGE, REQUESTED
from tests.support.openrouter_server import (
    FakeOpenRouter,
    ResponseSpec,
    ToolCall,
    error_spec,
    marker,
    marker_responder,
)
from tests.support.otlp_receiver import ExportedSpan, OTLPReceiver

QUESTION = "What is 6 times 7?"
ANSWER = "The answer is 42."
CALL = ResponseSpec(model=DATED, provider="Anthropic", usage=CACHED_CALL)
INPUT = "langfuse.observation.input"
OUTPUT = "langfuse.observation.output"


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


# ---------------------------------------------------------------------------- fixtures and helpers


@contextmanager
def _llama_index_as_it_was() -> Iterator[None]:
    """LlamaIndex's global state (root dispatcher's handlers, global handler, Settings) restored after."""
    dispatcher = get_dispatcher()
    spans, events = list(dispatcher.span_handlers), list(dispatcher.event_handlers)
    llm, embed, manager = Settings._llm, Settings._embed_model, Settings._callback_manager
    global_handler = llama_index.core.global_handler
    try:
        yield
    finally:
        dispatcher.span_handlers[:] = spans
        dispatcher.event_handlers[:] = events
        llama_index.core.global_handler = global_handler
        Settings._llm, Settings._embed_model, Settings._callback_manager = llm, embed, manager


def _ours(handler: Any) -> bool:
    return type(handler).__module__.startswith("langfuse_openrouter_callbacks")


@contextmanager
def without_our_handler() -> Iterator[None]:
    """LlamaIndex as the user has it without `set_global_handler()`: none of our handlers anywhere."""
    with _llama_index_as_it_was():
        dispatcher = get_dispatcher()
        dispatcher.span_handlers[:] = [h for h in dispatcher.span_handlers if not _ours(h)]
        dispatcher.event_handlers[:] = [h for h in dispatcher.event_handlers if not _ours(h)]
        llama_index.core.global_handler = None
        Settings._callback_manager = None
        yield


@pytest.fixture
def clean_llama_index() -> Iterator[None]:
    with _llama_index_as_it_was():
        yield


@pytest.fixture
def handler(catalog, clean_llama_index, langfuse_client) -> Any:
    return set_global_handler(price_catalog=catalog)


def openrouter_llm(server: FakeOpenRouter, model: str = REQUESTED, **kwargs: Any) -> OpenRouter:
    return OpenRouter(api_base=server.base_url, api_key="sk-or-test", model=model, max_retries=0, **kwargs)


def function_calling_llm(server: FakeOpenRouter, model: str = REQUESTED) -> OpenRouter:
    return openrouter_llm(server, model, is_function_calling_model=True)


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body.get("messages") or [])


def function_agent_responder(base: ResponseSpec = CALL) -> Callable[[dict[str, Any]], ResponseSpec]:
    """A tool call first, the answer once the request has the tool's result; a prompt's marker sets usage."""
    call = replace(base, content=None, tool_calls=(ToolCall("multiply", {"a": 6, "b": 7}),))
    answer = replace(base, content=ANSWER)

    def respond(body: dict[str, Any]) -> ResponseSpec:
        done = any(m.get("role") == "tool" for m in _messages(body))
        return marker_responder(answer if done else call)(body)

    return respond


def react_responder(body: dict[str, Any]) -> ResponseSpec:
    """ReAct's text protocol: an action first; the answer once an observation is in the prompt."""
    observed = any(
        m.get("role") == "user" and str(m.get("content")).startswith("Observation:") for m in _messages(body)
    )
    if observed:
        return replace(CALL, content=f"Thought: I can answer without using any more tools.\nAnswer: {ANSWER}")
    return replace(CALL, content='Thought: I need a tool.\nAction: multiply\nAction Input: {"a": 6, "b": 7}')


def handoff_responder(body: dict[str, Any]) -> ResponseSpec:
    """The greeter hands off to the calculator, which calls `multiply`, then answers."""
    tool_results = sum(m.get("role") == "tool" for m in _messages(body))
    if tool_results == 0:
        handoff = ToolCall("handoff", {"to_agent": "calculator", "reason": "math"})
        return replace(CALL, content=None, tool_calls=(handoff,))
    if tool_results == 1:
        return replace(CALL, content=None, tool_calls=(ToolCall("multiply", {"a": 6, "b": 7}),))
    return replace(CALL, content=ANSWER)


async def run_and_stream(workflow: Any, **kwargs: Any) -> tuple[str, list[str]]:
    """What the user gets: the result's text and the streamed deltas."""
    handler = workflow.run(**kwargs)
    deltas = [ev.delta async for ev in handler.stream_events() if isinstance(ev, AgentStream)]
    return str(await handler), deltas


def exported(client: Any, receiver: OTLPReceiver) -> list[ExportedSpan]:
    client.flush()
    return receiver.spans


def ancestors(span: ExportedSpan, spans: list[ExportedSpan]) -> list[ExportedSpan]:
    by_id = {s.span_id: s for s in spans}
    chain = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span)
    return chain


def of_type(spans: list[ExportedSpan], observation_type: str) -> list[ExportedSpan]:
    return sorted(
        (s for s in spans if s.observation_type == observation_type), key=lambda s: s.start_time_unix_nano
    )


def decoded(span: ExportedSpan, key: str) -> Any:
    return span.json_attribute(key)


def text_of(value: Any) -> str:
    """An observation's input or output as text, however the handler shaped it."""
    return value if isinstance(value, str) else json.dumps(value)


def assert_openrouter_generation(generation: ExportedSpan, total: float = 0.0241) -> None:
    """OpenRouter's usage, cost and metadata, as on every other generation this package records."""
    assert generation.model_name == DATED
    assert generation.cost_details["total"] == pytest.approx(total, abs=1e-12)
    meta = generation.metadata["openrouter"]
    assert meta["cost_source"] == "openrouter" and meta["provider"] == "Anthropic"
    assert meta["generation_id"].startswith("gen-")
    parameters = decoded(generation, "langfuse.observation.model.parameters")
    assert parameters["temperature"] == 0.1  # OpenRouter's default, sent on the wire
    # the agents stream: the first token's time is recorded, not after the call's end
    start = generation.attributes["langfuse.observation.completion_start_time"]
    assert start


def assert_one_trace(spans: list[ExportedSpan], requests: int) -> ExportedSpan:
    """One trace with the run's `agent` observation as its root, one priced generation per request."""
    assert spans
    assert len({s.trace_id for s in spans}) == 1, sorted({(s.trace_id, s.name) for s in spans})
    roots = [s for s in spans if s.parent_span_id is None]
    assert len(roots) == 1, [r.name for r in roots]
    (root,) = roots
    assert root.observation_type == "agent"
    generations = of_type(spans, "generation")
    assert len(generations) == requests, [g.name for g in generations]
    for generation in generations:
        assert generation.usage_details == EXPECTED_USAGE
        assert_openrouter_generation(generation)
        assert root in ancestors(generation, spans)
    for other in (s for s in spans if not s.is_generation):  # wrappers, steps, tools: never priced
        assert other.usage_details is None and other.model_name is None, other.name
        assert not (other.cost_details or {}).get("total"), other.name
        assert "openrouter" not in other.metadata, other.name
    total = sum((s.cost_details or {}).get("total", 0) for s in spans)
    assert total == pytest.approx(requests * 0.0241, abs=1e-12)
    return root


def assert_tool(tool: ExportedSpan, arguments: dict[str, Any], output: str) -> None:
    assert decoded(tool, INPUT) == arguments
    result = decoded(tool, OUTPUT)
    assert (result.get("content") if isinstance(result, dict) else str(result)) == output


def assert_between(tool: ExportedSpan, before: ExportedSpan, after: ExportedSpan) -> None:
    """The tool ran after the LLM request that asked for it and before the one that read its result."""
    assert before.end_time_unix_nano <= tool.start_time_unix_nano
    assert tool.end_time_unix_nano <= after.start_time_unix_nano


def assert_agent_run(spans: list[ExportedSpan], requests: int) -> tuple[ExportedSpan, list[ExportedSpan]]:
    """An agent run with one `multiply` call between its two LLM requests."""
    root = assert_one_trace(spans, requests)
    assert QUESTION in text_of(decoded(root, INPUT))
    assert ANSWER in text_of(decoded(root, OUTPUT))
    generations = of_type(spans, "generation")
    (tool,) = of_type(spans, "tool")
    assert tool.name == "multiply"
    assert_tool(tool, {"a": 6, "b": 7}, "42")
    assert root in ancestors(tool, spans)
    assert not any(tool in ancestors(g, spans) for g in generations)
    assert_between(tool, generations[0], generations[1])
    for generation in generations:  # the LLM request runs inside the agent's step that makes it
        assert any("run_agent_step" in a.name for a in ancestors(generation, spans)), generation.name
    assert "multiply" in text_of(decoded(generations[0], OUTPUT))  # the tool call it asked for
    assert "42" in text_of(decoded(generations[1], INPUT))  # the tool's result it was given
    assert ANSWER in text_of(decoded(generations[1], OUTPUT))
    return root, generations


# ---------------------------------------------------------------------------- the apps


async def test_function_agent_with_a_tool_call(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    openrouter.set_responder(function_agent_responder())
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(multiply)], llm=function_calling_llm(openrouter))
    with without_our_handler():
        expected = await run_and_stream(agent, user_msg=QUESTION)
    langfuse_client.flush()
    otlp_receiver.clear()
    requests_before = len(openrouter.chat_requests)

    got = await run_and_stream(agent, user_msg=QUESTION)
    assert got == expected and got[0] == ANSWER and "".join(got[1]) == ANSWER
    assert len(openrouter.chat_requests) - requests_before == 2
    assert all(r.json()["stream"] for r in openrouter.chat_requests)  # the agent streams: so the test does
    assert_agent_run(exported(langfuse_client, otlp_receiver), requests=2)


async def test_react_agent_with_a_tool_call(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    openrouter.set_responder(react_responder)
    agent = ReActAgent(tools=[FunctionTool.from_defaults(multiply)], llm=openrouter_llm(openrouter))
    with without_our_handler():
        expected = await run_and_stream(agent, user_msg=QUESTION)
    langfuse_client.flush()
    otlp_receiver.clear()

    got = await run_and_stream(agent, user_msg=QUESTION)
    assert got == expected and got[0] == ANSWER
    assert len(openrouter.chat_requests) == 2 * 2  # with and without the handler: an action, then the answer
    assert all(r.json()["stream"] for r in openrouter.chat_requests)
    spans = exported(langfuse_client, otlp_receiver)
    _, generations = assert_agent_run(spans, requests=2)
    assert "Observation: 42" in text_of(decoded(generations[1], INPUT))


async def test_agent_workflow_with_a_handoff(openrouter, handler, langfuse_client, otlp_receiver) -> None:
    openrouter.set_responder(handoff_responder)
    llm = function_calling_llm(openrouter)

    def workflow() -> AgentWorkflow:
        greeter = FunctionAgent(
            name="greeter", description="Greets the user.", llm=llm, tools=[], can_handoff_to=["calculator"]
        )
        calculator = FunctionAgent(
            name="calculator", description="Does math.", llm=llm, tools=[FunctionTool.from_defaults(multiply)]
        )
        return AgentWorkflow(agents=[greeter, calculator], root_agent="greeter")

    with without_our_handler():
        expected = await run_and_stream(workflow(), user_msg=QUESTION)
    langfuse_client.flush()
    otlp_receiver.clear()

    got = await run_and_stream(workflow(), user_msg=QUESTION)
    assert got == expected and got[0] == ANSWER
    spans = exported(langfuse_client, otlp_receiver)
    root = assert_one_trace(spans, requests=3)
    assert QUESTION in text_of(decoded(root, INPUT)) and ANSWER in text_of(decoded(root, OUTPUT))
    generations = of_type(spans, "generation")
    handoff, tool = of_type(spans, "tool")
    assert (handoff.name, tool.name) == ("handoff", "multiply")
    # the arguments the LLM gave: not the workflow Context LlamaIndex adds for tools that take one
    assert decoded(handoff, INPUT) == {"to_agent": "calculator", "reason": "math"}
    assert "calculator" in text_of(decoded(handoff, OUTPUT))
    assert_tool(tool, {"a": 6, "b": 7}, "42")
    assert_between(handoff, generations[0], generations[1])
    assert_between(tool, generations[1], generations[2])
    for observation in (handoff, tool, *generations):
        assert root in ancestors(observation, spans)


class _Draft(Event):
    text: str


class TwoSteps(Workflow):
    """A custom workflow: one step completes, the next streams a chat about what the first said."""

    def __init__(self, llm: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.llm = llm

    @step
    async def draft(self, ev: StartEvent) -> _Draft:
        return _Draft(text=(await self.llm.acomplete(ev.topic)).text)

    @step
    async def polish(self, ctx: Context, ev: _Draft) -> StopEvent:
        stream = await self.llm.astream_chat([ChatMessage(role="user", content="Polish: " + ev.text)])
        text = ""
        async for chunk in stream:
            delta = chunk.delta or ""
            ctx.write_event_to_stream(AgentStream(delta=delta, response="", current_agent_name="w"))
            text = chunk.message.content or ""
        return StopEvent(result=text)


async def test_custom_workflow_with_two_llm_steps(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    openrouter.set_responder(
        lambda body: replace(CALL, content="Polished draft." if "Polish:" in str(body) else "A draft.")
    )
    with without_our_handler():
        expected = await run_and_stream(TwoSteps(openrouter_llm(openrouter)), topic="cats")
    langfuse_client.flush()
    otlp_receiver.clear()

    got = await run_and_stream(TwoSteps(openrouter_llm(openrouter)), topic="cats")
    assert got == expected and got[0] == "Polished draft."
    spans = exported(langfuse_client, otlp_receiver)
    root = assert_one_trace_of_a_workflow(spans)
    draft, polish = of_type(spans, "generation")
    assert "cats" in text_of(decoded(draft, INPUT))
    assert "A draft." in text_of(decoded(draft, OUTPUT))
    assert "Polish: A draft." in text_of(decoded(polish, INPUT))
    assert "Polished draft." in text_of(decoded(polish, OUTPUT))
    assert polish.attributes["langfuse.observation.completion_start_time"]
    (draft_step,) = [a for a in ancestors(draft, spans) if a.name.endswith("draft")]
    (polish_step,) = [a for a in ancestors(polish, spans) if a.name.endswith("polish")]
    assert draft_step.parent_span_id == polish_step.parent_span_id == root.span_id  # steps of one run
    assert draft_step.end_time_unix_nano <= polish_step.start_time_unix_nano
    assert "Polished draft." in text_of(decoded(root, OUTPUT))


def assert_one_trace_of_a_workflow(spans: list[ExportedSpan]) -> ExportedSpan:
    """A custom workflow's trace: like an agent's, with a non-streamed generation among its two."""
    assert len({s.trace_id for s in spans}) == 1
    (root,) = [s for s in spans if s.parent_span_id is None]
    assert root.observation_type == "agent"
    generations = of_type(spans, "generation")
    assert len(generations) == 2
    for generation in generations:
        assert generation.usage_details == EXPECTED_USAGE
        assert generation.cost_details["total"] == pytest.approx(0.0241, abs=1e-12)
        assert generation.metadata["openrouter"]["cost_source"] == "openrouter"
        assert generation.model_name == DATED
        assert root in ancestors(generation, spans)
    for other in (s for s in spans if not s.is_generation):
        assert other.usage_details is None and other.model_name is None, other.name
        assert not (other.cost_details or {}).get("total"), other.name
    return root


# ---------------------------------------------------------------------------- runs side by side


async def test_concurrent_agent_runs_stay_in_their_own_traces(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    openrouter.set_responder(function_agent_responder())
    llm = function_calling_llm(openrouter)
    costs = [0.0011, 0.0022, 0.0033, 0.0044]

    async def run(cost: float) -> str:
        agent = FunctionAgent(tools=[FunctionTool.from_defaults(multiply)], llm=llm)
        text, _ = await run_and_stream(agent, user_msg=f"{QUESTION} {marker(cost=cost)}")
        return text

    assert await asyncio.gather(*(run(c) for c in costs)) == [ANSWER] * len(costs)
    spans = exported(langfuse_client, otlp_receiver)
    traces: dict[str, list[ExportedSpan]] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)
    assert len(traces) == len(costs)
    seen = []
    for trace in traces.values():
        (root,) = [s for s in trace if s.parent_span_id is None]
        assert root.observation_type == "agent"
        generations = of_type(trace, "generation")
        assert len(generations) == 2 and len(of_type(trace, "tool")) == 1
        (cost,) = {g.cost_details["total"] for g in generations}  # both requests of the same run
        assert str(cost) in text_of(decoded(root, INPUT))
        seen.append(cost)
    assert sorted(seen) == costs


async def test_trace_attributes_reach_every_observation_of_a_run(
    openrouter, catalog, clean_llama_index, langfuse_client, otlp_receiver
) -> None:
    set_global_handler(price_catalog=catalog, user_id="u-1", tags=["agents"])
    openrouter.set_responder(function_agent_responder())
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(multiply)], llm=function_calling_llm(openrouter))
    with trace_attributes(session_id="s-7", trace_name="math"):
        assert (await run_and_stream(agent, user_msg=QUESTION))[0] == ANSWER
    spans = exported(langfuse_client, otlp_receiver)
    assert_agent_run(spans, requests=2)
    for span in spans:
        assert span.attributes["user.id"] == "u-1" and span.attributes["session.id"] == "s-7", span.name
        assert span.attributes["langfuse.trace.name"] == "math", span.name
        assert list(span.attributes["langfuse.trace.tags"]) == ["agents"], span.name


# ---------------------------------------------------------------------------- failures


def broken_multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    raise ValueError("the multiplier is broken")


async def test_a_failing_tool_is_an_error_and_the_run_goes_on(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    # FunctionTool turns the exception into an error ToolOutput; the agent hands it to the LLM and answers
    openrouter.set_responder(function_agent_responder())
    tool = FunctionTool.from_defaults(broken_multiply, name="multiply")
    agent = FunctionAgent(tools=[tool], llm=function_calling_llm(openrouter))
    with without_our_handler():
        expected = await run_and_stream(agent, user_msg=QUESTION)
    langfuse_client.flush()
    otlp_receiver.clear()

    assert await run_and_stream(agent, user_msg=QUESTION) == expected
    spans = exported(langfuse_client, otlp_receiver)
    root = assert_one_trace(spans, requests=2)
    assert root.attributes.get("langfuse.observation.level") != "ERROR"  # the run itself succeeded
    (failed,) = of_type(spans, "tool")
    assert failed.name == "multiply" and decoded(failed, INPUT) == {"a": 6, "b": 7}
    assert failed.attributes["langfuse.observation.level"] == "ERROR"
    assert "the multiplier is broken" in failed.attributes["langfuse.observation.status_message"]
    assert "the multiplier is broken" in text_of(decoded(of_type(spans, "generation")[1], INPUT))


async def test_an_llm_error_ends_the_run_in_one_trace(
    openrouter, handler, langfuse_client, otlp_receiver
) -> None:
    def failing_second_request() -> None:
        openrouter.queue(
            replace(CALL, content=None, tool_calls=(ToolCall("multiply", {"a": 6, "b": 7}),)),
            error_spec(status=500, message="Internal Server Error"),
        )

    agent = FunctionAgent(tools=[FunctionTool.from_defaults(multiply)], llm=function_calling_llm(openrouter))
    failing_second_request()
    with without_our_handler(), pytest.raises(Exception) as without:
        await run_and_stream(agent, user_msg=QUESTION)
    langfuse_client.flush()
    otlp_receiver.clear()

    failing_second_request()
    with pytest.raises(Exception) as with_handler:
        await run_and_stream(agent, user_msg=QUESTION)
    assert (type(with_handler.value), str(with_handler.value)) == (type(without.value), str(without.value))
    spans = exported(langfuse_client, otlp_receiver)
    assert len({s.trace_id for s in spans}) == 1
    (root,) = [s for s in spans if s.parent_span_id is None]
    assert root.observation_type == "agent" and root.attributes["langfuse.observation.level"] == "ERROR"
    answered, failed = of_type(spans, "generation")
    assert_openrouter_generation(answered)
    assert failed.attributes["langfuse.observation.level"] == "ERROR"
    assert "Internal Server Error" in failed.attributes["langfuse.observation.status_message"]
    assert failed.cost_details == {"total": 0} and failed.usage_details is None
    assert len(of_type(spans, "tool")) == 1
    assert sum((s.cost_details or {}).get("total", 0) for s in spans) == pytest.approx(0.0241, abs=1e-12)
