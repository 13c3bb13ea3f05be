"""Meterline: an OpenAI-compatible proxy that shows and cuts LLM spend."""
