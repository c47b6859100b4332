"""The errors only the job routes answer (in the one error shape of ``errors.py``)."""

from __future__ import annotations

from ..errors import ServiceError


class UnsupportedMediaType(ServiceError):
    """A body that is neither JSON nor a multipart upload, or a file of no known format."""

    status_code = 415
    error_type = "unsupported_media_type"


class JobConflict(ServiceError):
    """The job is not in a state that allows this (e.g. cancelling a finished job)."""

    status_code = 409
    error_type = "conflict"


class JobExpired(ServiceError):
    """The job's results were deleted at the end of its retention (KRONOS_JOBS_RETENTION_HOURS)."""

    status_code = 410
    error_type = "job_expired"


class TooManyJobs(ServiceError):
    """The key already has KRONOS_JOBS_MAX_OPEN_PER_KEY jobs queued or running."""

    status_code = 429
    error_type = "too_many_jobs"


class JobStoreUnavailable(ServiceError):
    """The job store cannot be reached (or is still being opened); predict keeps serving."""

    status_code = 503
    error_type = "job_store_unavailable"
