"""The models one instance serves (``model_specs.py`` says which), each a ``ForecastService`` with its own
model thread and batcher, so a model batch never mixes models and one model's failure leaves the
others serving. Requests pick a model by name (``"model"``); the default one answers the rest, and
readiness follows it.

Other routes that forecast (e.g. a backtest) take ``catalog.get(name)`` for a model's service, or
``catalog.batcher_for(name)`` for its batcher.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from model import Forecast, SeriesInput

from .batching import BatchScheduler
from .errors import ForecastTimeout, InvalidRequest, ModelNotReady, QueueFull, ServiceError
from .metrics import ServiceMetrics
from .model_specs import model_specs
from .service import ForecastService
from .settings import Settings

_ITEM_PREFIX = re.compile(r"^batch item (\d+): ")


class ModelCatalog:
    """Name → ``ForecastService`` for every served model; ``default`` answers requests that name none."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        specs, self.default_name = model_specs(settings)
        self.services = {spec.name: ForecastService(settings, metrics, spec) for spec in specs}

    @property
    def default(self) -> ForecastService:
        return self.services[self.default_name]

    @property
    def names(self) -> list[str]:
        return list(self.services)

    def get(self, name: str | None, field: str = "model") -> ForecastService:
        """The service of model ``name`` (None: the default); a 422 naming ``field`` and the served names."""
        if name is None:
            return self.default
        service = self.services.get(name)
        if service is None:
            raise InvalidRequest(
                f"{field}: unknown model {name!r}; this instance serves {', '.join(self.names)} (GET /v1/models)",
                {"field": field, "models": self.names},
            )
        return service

    def described(self) -> list[dict[str, Any]]:
        """Every served model as GET /v1/models and /v1/readyz list it, the default one marked."""
        return [describe(service, name == self.default_name) for name, service in self.services.items()]

    def batcher_for(self, name: str | None) -> BatchScheduler:
        """The batcher of model ``name`` (None: the default), for routes that queue series themselves."""
        return self.get(name).scheduler

    async def load(self) -> None:
        """Load every model at once, each on its own model thread; a failure stays that model's state."""
        await asyncio.gather(*(service.load() for service in self.services.values()))

    async def close(self) -> None:
        await asyncio.gather(*(service.close() for service in self.services.values()))

    async def forecast(
        self, series: Sequence[SeriesInput], models: Sequence[str | None], endpoint: str, partial: bool = False
    ) -> tuple[list[Forecast], list[ForecastService]]:
        """Forecast ``series[i]`` with model ``models[i]``: the forecasts, and the service of each.

        Series of one model go to its batcher together (all or nothing, as one request); with several
        models, each group goes to its own batcher at once, and the first failure ends the others.
        Unknown names must have been refused already (``get``). ``partial``: each series' Forecast or
        its own ServiceError, every group running to its end; a group refused as a whole (queue full,
        model not ready) answers each of its series with that error, unless every group was refused:
        then that error is raised, as nothing ran.
        """
        services = [self.get(name) for name in models]
        groups: dict[str, list[int]] = {}
        for i, service in enumerate(services):
            groups.setdefault(service.name, []).append(i)
        if partial:
            return await self._partial(series, services, groups, endpoint), services
        if len(groups) == 1:
            return await services[0].forecast(series, endpoint), services
        tasks = {
            name: asyncio.ensure_future(self.services[name].forecast([series[i] for i in indices], endpoint))
            for name, indices in groups.items()
        }
        forecasts: list[Any] = [None] * len(series)
        try:
            await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
            for name, task in tasks.items():  # the first failure, in item order of the groups
                if task.done() and not task.cancelled() and isinstance(task.exception(), ServiceError):
                    raise _renumbered(task.exception(), groups[name])
            for name, task in tasks.items():
                for i, forecast in zip(groups[name], await task):
                    forecasts[i] = forecast
        finally:
            for task in tasks.values():
                task.cancel()  # a no-op once done; otherwise that group's series leave their batcher
                if task.done() and not task.cancelled():
                    task.exception()  # seen: a second group's failure is not logged as never retrieved
        return forecasts, services

    async def _partial(
        self,
        series: Sequence[SeriesInput],
        services: list[ForecastService],
        groups: dict[str, list[int]],
        endpoint: str,
    ) -> list[Any]:
        async def group(name: str, indices: list[int]) -> list[Any] | ServiceError:
            try:
                return await self.services[name].forecast([series[i] for i in indices], endpoint, partial=True)
            except ServiceError as error:  # the group as a whole: refused before anything ran
                return error

        answers = await asyncio.gather(*(group(name, indices) for name, indices in groups.items()))
        if all(isinstance(a, ServiceError) for a in answers):
            raise answers[0]
        outcomes: list[Any] = [None] * len(series)
        for indices, answer in zip(groups.values(), answers):
            for j, i in enumerate(indices):
                outcomes[i] = answer if isinstance(answer, ServiceError) else answer[j]
        return outcomes


def _renumbered(error: ServiceError, indices: list[int]) -> ServiceError:
    """A group's error names its item by its place in the whole batch request, not in the group."""
    match = _ITEM_PREFIX.match(error.message)
    if match:
        error.message = f"batch item {indices[int(match[1])]}: {error.message[match.end() :]}"
    elif len(indices) == 1 and not isinstance(error, (ModelNotReady, QueueFull, ForecastTimeout)):
        error.message = f"batch item {indices[0]}: {error.message}"  # the series' own error
    return error


def describe(service: ForecastService, default: bool) -> dict[str, Any]:
    """One model as GET /v1/models and /v1/readyz list it."""
    info, spec = service.model, service.spec
    return {
        "name": service.name,
        "default": default,
        "state": service.state,
        "reason": service.reason,
        "source": spec.source,
        "revision": info.revision if info else spec.revision,
        "version": info.version if info else None,
        "tokenizer_source": info.tokenizer_source if info else spec.tokenizer,
        "tokenizer_revision": info.tokenizer_revision if info else spec.tokenizer_revision,
        "parameters": info.parameters if info else None,
        "max_context": spec.max_context,
        "precision": spec.precision,
        "device": service.device,
    }
