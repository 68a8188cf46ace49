"""What the routes work with, built once per app by `api_server.create_app`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from generation.engine import GenerationEngine
from generation.requests import SampleTypeRotation
from config.providers import AppConfig
from config.settings import Settings
from dataset.stats import StatsFrame
from storage.store import Store


@dataclass
class Services:
    settings: Settings
    config: AppConfig
    engine: GenerationEngine
    store: Store
    stats: StatsFrame
    rotation: SampleTypeRotation = field(default_factory=SampleTypeRotation)
    batches: Any = None          # batch.BatchManager, once started
    quality: Any = None          # quality service
    demo: Any = None             # demo.DemoProviders in --demo mode
    started: float = field(default_factory=time.time)

    @property
    def simulated(self) -> bool:
        return self.demo is not None

    def default_provider(self) -> str | None:
        """The configured default provider if it has a key, else the first one that does."""
        configured = self.engine.configured_providers()
        preferred = self.config.engine.default_provider
        if preferred in configured:
            return preferred
        return configured[0] if configured else None


def services() -> Services:
    return current_app.extensions["services"]
