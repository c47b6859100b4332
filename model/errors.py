"""Exceptions raised by the model package; every one is a ValueError so callers can catch bad input in one place."""


class KronosError(ValueError):
    """Base class of every error the model package raises on purpose."""


class ConfigError(KronosError):
    """A config.json that cannot describe a working network."""


class CheckpointError(KronosError):
    """A checkpoint folder that is missing, unreadable or does not match its config."""


class InputError(KronosError):
    """Candles, timestamps or generation settings that cannot be forecast."""


class DeviceError(KronosError):
    """A device string that is not understood."""


class DeviceUnavailableError(DeviceError):
    """A well-formed device that this machine does not have (e.g. cuda:0 without a GPU)."""


class PrecisionError(KronosError):
    """A precision (fp32, bf16, int8) that is unknown or that this machine cannot run at speed."""
