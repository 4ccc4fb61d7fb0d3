"""What a notification handler receives, and the shipped handlers."""

from __future__ import annotations

from calsync.handlers.delivery import Delivery, DeliveryError, Handler
from calsync.handlers.logging_handler import LoggingHandler
from calsync.handlers.webhook import (
    WebhookHandler,
    WebhookVerificationError,
    new_webhook_secret,
    sign_webhook,
    verify_webhook,
)

__all__ = [
    "Delivery",
    "DeliveryError",
    "Handler",
    "LoggingHandler",
    "WebhookHandler",
    "WebhookVerificationError",
    "new_webhook_secret",
    "sign_webhook",
    "verify_webhook",
]
