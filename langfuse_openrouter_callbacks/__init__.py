"""Record OpenRouter's prompt-cache usage, true cost and cache savings in Langfuse.

The core (this package's root) imports neither LangChain nor LlamaIndex; the framework adapters live in
`langfuse_openrouter_callbacks.langchain` and `langfuse_openrouter_callbacks.llama_index`.
"""

from .catalog import PriceCatalog
from .cost import CostBreakdown, compute_cost
from .generation_stats import GenerationStatsFetcher
from .langfuse_fields import to_langfuse
from .pricing import ModelPricing, PriceOverride, PricingError
from .usage import OpenRouterUsage

__version__ = "0.1.0"

__all__ = [
    "CostBreakdown",
    "GenerationStatsFetcher",
    "ModelPricing",
    "OpenRouterUsage",
    "PriceCatalog",
    "PriceOverride",
    "PricingError",
    "__version__",
    "compute_cost",
    "to_langfuse",
]
