"""Python client for the cae service (reconstruct, colorize, encode, decode), sync and async."""

from cae_client._base import DEFAULT_TIMEOUT, ImageInput, ImageResult, LatentResult, RetryPolicy
from cae_client._client import AsyncClient, Client
from cae_client.errors import (APIError, CaeError, InvalidImage, InvalidInput, NotFound, Timeout, TooLarge, TransportError,
                               Unauthorised, Unavailable)

__all__ = ["Client", "AsyncClient", "ImageResult", "LatentResult", "RetryPolicy", "ImageInput", "DEFAULT_TIMEOUT",
           "CaeError", "APIError", "TransportError", "InvalidInput", "InvalidImage", "TooLarge", "Unauthorised", "NotFound",
           "Unavailable", "Timeout"]
__version__ = "0.1.0"
