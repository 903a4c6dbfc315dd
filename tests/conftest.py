"""Shared fixtures: local OpenRouter and Langfuse-compatible servers, one Langfuse client per session."""

pytest_plugins = ["tests.support.fixtures"]
