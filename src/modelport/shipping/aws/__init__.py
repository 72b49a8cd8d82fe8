"""AWS calls for the deploy commands (SageMaker, Lambda): botocore's errors as modelport's.

:func:`aws_errors` turns every botocore error raised inside it into a modelport error with one
clear line (what was called, AWS's code and message, what to do), so the command line never
shows a traceback for a refused, misconfigured or unreachable AWS. boto3 and botocore come with
the ``aws`` extra and are imported only when a deploy runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from modelport.errors import Conflict, Forbidden, InvalidSetting, ModelportError, NotFound

INSTALL_AWS = "pip install 'modelport[aws]'"
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException"}
_CREDENTIALS = {"InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch"}
_MISSING = {"ResourceNotFound", "ResourceNotFoundException", "NotFoundException", "NoSuchBucket", "NoSuchKey", "404"}
_INVALID = {"InvalidParameterValueException", "ValidationException", "BadRequestException"}
_CONFLICT = {"ResourceInUse", "ResourceInUseException", "ResourceConflictException", "ConflictException"}


@contextmanager
def aws_errors(guide: str = "docs/shipping.md") -> Iterator[None]:
    """One clear modelport error for any botocore error inside (``guide``: the page on the IAM
    permissions needed). A waiter's error passes through: its caller reads the resource's state."""
    try:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            NoRegionError,
            ParamValidationError,
            PartialCredentialsError,
            WaiterError,
        )
    except ImportError:
        raise ModelportError(f"deploying to AWS needs boto3: {INSTALL_AWS}") from None
    try:
        yield
    except WaiterError:
        raise
    except ClientError as exc:
        raise client_error(exc, guide) from None
    except (NoCredentialsError, PartialCredentialsError):
        raise InvalidSetting(
            "no AWS credentials found: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), "
            "or run aws configure"
        ) from None
    except NoRegionError:
        raise InvalidSetting("no AWS region: give --region, or set AWS_REGION / AWS_DEFAULT_REGION") from None
    except EndpointConnectionError as exc:
        raise ModelportError(f"cannot reach AWS ({exc}); check --region and the network") from None
    except ParamValidationError as exc:
        raise InvalidSetting(f"AWS refused the request before sending it: {' '.join(str(exc).split())}") from None
    except BotoCoreError as exc:
        raise ModelportError(f"AWS call failed: {' '.join(str(exc).split())}") from None


def client_error(exc: Any, guide: str = "docs/shipping.md") -> ModelportError:
    """The modelport error for a botocore ``ClientError``: what was called, AWS's code and message."""
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), " ".join(str(error.get("Message", "")).split())
    said = f"{exc.operation_name}: {code}: {message}" if message else f"{exc.operation_name}: {code}"
    if code in _DENIED:
        return Forbidden(f"AWS denied {said} (the caller's IAM policy must allow it; see {guide})")
    if code in _CREDENTIALS:
        return InvalidSetting(f"AWS rejected the credentials at {said}")
    if code in _MISSING or message.startswith("Could not find"):
        return NotFound(f"AWS: {said}")
    if code in _INVALID:
        return InvalidSetting(f"AWS refused {said}")
    if code in _CONFLICT:
        return Conflict(f"AWS: {said} (wait for the running operation to end, then try again)")
    return ModelportError(f"AWS call failed: {said}")
