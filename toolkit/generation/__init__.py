"""Generation backends behind one interface: transformers (CPU fallback), vLLM in-process, and
any OpenAI-compatible server. Pick one with `make_backend(BackendConfig(...))`."""

from toolkit.generation.base import BackendConfig, Generation, GenerationBackend, SamplingConfig, make_backend

__all__ = ["BackendConfig", "Generation", "GenerationBackend", "SamplingConfig", "make_backend"]
