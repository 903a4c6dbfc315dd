"""The demo: a LangChain chain and a LlamaIndex query engine using prompt caching through OpenRouter.

With `OPENROUTER_API_KEY` set it calls OpenRouter; without, an embedded OpenRouter on 127.0.0.1. With
`LANGFUSE_PUBLIC_KEY` and `LANGFUSE_SECRET_KEY` set it exports to Langfuse; without, to an embedded
Langfuse-compatible receiver. Each half falls back on its own. It prints what Langfuse received for
every generation: tokens by cache bucket, cost, the no-cache cost and the savings.
"""

from __future__ import annotations

from .run import DemoResult, GenerationRow, run_demo

__all__ = ["DemoResult", "GenerationRow", "run_demo"]
