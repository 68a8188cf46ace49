"""`--demo`: simulated providers on loopback, so anyone can watch the system work without keys.

One local server answers both wire formats with realistic latency, the providers' published
per-minute limits and occasional faults (503s, 500s, capacity errors, prose instead of JSON).
Demo data lives in its own directory and every record is marked `simulated`.
"""
from __future__ import annotations

import random

from config.providers import load_config
from config.settings import Settings
from simulator.server import FakeProviderServer, groq_error

DEMO_GROQ_KEY = "demo-groq-key"
DEMO_CEREBRAS_KEY = "demo-cerebras-key"


class DemoProviders:
    def __init__(self, server: FakeProviderServer):
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()


def start_demo(settings: Settings, *, latency: tuple[float, float] = (0.4, 1.6), fault_rate: float = 0.06,
               seed: int | None = None) -> tuple[Settings, DemoProviders]:
    """Start the simulator; return settings pointing the real clients at it."""
    rng = random.Random(seed)
    server = FakeProviderServer(latency=lambda: rng.uniform(*latency), fault_rate=fault_rate, seed=seed,
                                simulated=True).start()
    config = load_config(settings.provider_config_file, settings.env)
    for provider in config.providers.values():
        for model in provider.models:
            limits = model.limits
            server.limit(model.id, rpm=limits.rpm, rpd=limits.rpd, tpm=limits.tpm)
            if model.legacy:  # decommissioned upstream: the simulator says so, as the real API does
                server.always(model.id, groq_error(404, f"The model `{model.id}` has been decommissioned and "
                                                        "is no longer supported.", "model_decommissioned"))
    env = {**settings.env, "GROQ_API_KEY": DEMO_GROQ_KEY, "CEREBRAS_API_KEY": DEMO_CEREBRAS_KEY,
           "GROQ_BASE_URL": server.url, "CEREBRAS_BASE_URL": server.url}
    demo_settings = settings.replace(env=env, data_dir=settings.data_dir / "demo")
    return demo_settings, DemoProviders(server)
