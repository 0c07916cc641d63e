"""The exceptions the client raises, mapped from the service's status codes.

    CaeError
    ├── TransportError          the service could not be reached (after retries)
    └── APIError                the service answered with an error (status, code, message)
        ├── InvalidInput        400, 415, 422: not an image, corrupt, bad options or latent
        │   └── InvalidImage    400, 415
        ├── TooLarge            413: body, image or tensor over the service's limits
        ├── Unauthorised        401: missing or wrong API key
        ├── NotFound            404
        ├── Unavailable         429, 503: overloaded, loading or draining (retried first)
        └── Timeout             504, or no answer within the client's timeout
"""

from __future__ import annotations


class CaeError(Exception):
    """Base class of every error this library raises."""


class TransportError(CaeError):
    """The request never got an answer: connection refused, reset, DNS failure."""


class APIError(CaeError):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class InvalidInput(APIError):
    pass


class InvalidImage(InvalidInput):
    pass


class TooLarge(APIError):
    pass


class Unauthorised(APIError):
    pass


class NotFound(APIError):
    pass


class Unavailable(APIError):
    pass


class Timeout(APIError):
    pass


_BY_STATUS = {400: InvalidImage, 415: InvalidImage, 422: InvalidInput, 413: TooLarge, 401: Unauthorised, 403: Unauthorised,
              404: NotFound, 429: Unavailable, 503: Unavailable, 504: Timeout}


def error_for(status: int, code: str, message: str) -> APIError:
    cls = _BY_STATUS.get(status, APIError)
    if status == 400 and code in ("invalid_multipart", "no_image", "empty_body", "client_disconnected") and cls is InvalidImage:
        cls = InvalidInput
    return cls(status, code, message)
