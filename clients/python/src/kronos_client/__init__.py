"""kronos-client: the Kronos forecasting service from Python, DataFrames in and out. No torch: it only speaks HTTP.

from kronos_client import Client

with Client("http://127.0.0.1:8000", api_key="...") as kronos:
    result = kronos.forecast(df, pred_len=20, sample_count=16, quantiles=(0.1, 0.5, 0.9), seed=7)
    result.frame      # the mean forecast, indexed by the forecast timestamps
    result.bands      # close quantiles, one column per level
"""

from ._version import MIN_SERVER_VERSION, __version__
from .client import AsyncClient, Client
from .errors import (
    ConnectionError,
    Forbidden,
    IncompatibleServer,
    JobFailed,
    KronosError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
    ValidationError,
)
from .frames import series_seed
from .jobs import AsyncJob, Job
from .results import BacktestResult, ForecastResult

__all__ = [
    "MIN_SERVER_VERSION",
    "AsyncClient",
    "AsyncJob",
    "BacktestResult",
    "Client",
    "ConnectionError",
    "ForecastResult",
    "Forbidden",
    "IncompatibleServer",
    "Job",
    "JobFailed",
    "KronosError",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "ValidationError",
    "__version__",
    "series_seed",
]
