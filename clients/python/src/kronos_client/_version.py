"""The client's version: the service's (the root pyproject.toml's ``version``; a test keeps them equal)."""

__version__ = "0.1.0"

# The oldest kronos-service this client speaks to (its /openapi.json ``info.version``). Routes and fields
# newer than that (/v1/jobs, return_paths) are checked in the server's OpenAPI when a call needs them.
MIN_SERVER_VERSION = "0.1.0"
