"""What a notification handler receives, and the shipped handlers."""

from __future__ import annotations

from calsync.handlers.delivery import (
    Delivery,
    DeliveryError,
    Handler,
    LoggingHandler,
    WebhookHandler,
    WebhookVerificationError,
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
    "sign_webhook",
    "verify_webhook",
]
