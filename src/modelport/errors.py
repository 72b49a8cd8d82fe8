"""Domain errors. They know no wire format: protocols map them to status codes.

Every error carries a message meant for the person who made the mistake: what was wrong and,
where there is one, how to fix it.
"""

from __future__ import annotations


class ModelportError(Exception):
    """Base of every error modelport raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidReference(ModelportError):
    """A model reference (``iris``, ``iris@3``, ``iris@production``) that cannot be parsed."""


class NotFound(ModelportError):
    """A model, version or alias that does not exist (or is not served)."""


class Conflict(ModelportError):
    """The request contradicts the registry's state (e.g. deleting a version an alias uses)."""


class InvalidInput(ModelportError):
    """Inference input that does not match the model's signature."""

    def __init__(self, message: str, *, input_name: str | None = None) -> None:
        super().__init__(message)
        self.input_name = input_name


class InvalidModel(ModelportError):
    """A model or artifact that cannot be registered or loaded as given."""


class UntrustedArtifact(InvalidModel):
    """An artifact that can run arbitrary code (pickle, custom Python) without explicit trust."""


class EnvironmentMismatch(ModelportError):
    """The running library versions differ from those the model was registered with."""


class ModelNotReady(ModelportError):
    """The model exists but cannot answer now (loading, failed, unloaded)."""


class PredictionFailed(ModelportError):
    """The runtime raised while predicting on input that passed validation."""


class Overloaded(ModelportError):
    """The server has more work queued than it accepts; the caller should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(ModelportError):
    """A request did not finish within its deadline (it was dropped from the queue, or its answer abandoned)."""


class Unauthenticated(ModelportError):
    """Credentials are missing, malformed, unknown, expired or revoked (who is calling is not known)."""


class Forbidden(ModelportError):
    """The caller is known but its scopes do not allow this operation."""


class InvalidScope(ModelportError):
    """A scope that is not ``infer``, ``infer:<model>`` or ``manage``."""


class InsufficientResources(ModelportError):
    """Loading would exceed the memory (or another resource) this process has left."""


class InvalidSetting(ModelportError):
    """A configuration value (environment variable or option) that cannot be used as given."""


class RegistrationWarning(UserWarning):
    """A version was registered, but not as its owner may expect; the message says what and why.
    The CLI prints these on stderr, one line each."""


class ConversionWarning(RegistrationWarning):
    """The ONNX conversion failed or disagreed with the model, so its native runtime serves it."""


class DeviceWarning(RegistrationWarning):
    """The device a version was registered for is not usable on the machine that registered it."""
