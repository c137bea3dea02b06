"""rho-serve's engine: paged KV cache, continuous batching, prefix caching, sampling. Owns every tensor."""
from server.config import EngineConfig


def load_engine_client(config: EngineConfig):
    """Load the checkpoint and build the engine; returns the async client the router talks to."""
    from server.client import EngineClient
    from server.engine import build_engine

    return EngineClient(build_engine(config))


__all__ = ["EngineConfig", "load_engine_client"]
