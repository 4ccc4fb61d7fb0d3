"""redact(): the one place that decides what of a feed URL may be shown."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calsync.core import redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://user:pass@host/cal.ics?token=s3cr3t",
            "https://***@host/cal.ics?token=***",
        ),
        ("https://user@host/cal.ics", "https://***@host/cal.ics"),
        ("http://:pw@host/", "http://***@host/"),
        ("https://host/cal.ics#s3cr3t", "https://host/cal.ics"),
        ("https://host/cal.ics?a=1&b=2", "https://host/cal.ics?a=***&b=***"),
        ("https://host/cal.ics?s3cr3t", "https://host/cal.ics?***"),
        ("https://host/x?ab12cd34ef56gh78ij90=1", "https://host/x?***"),
        ("HTTPS://Host.Example:8443/cal.ics", "https://host.example:8443/cal.ics"),
        ("https://[::1]:8080/a?b=c", "https://[::1]:8080/a?b=***"),
        (
            "https://calendar.google.com/calendar/ical/x%40group.calendar.google.com"
            "/private-0123456789abcdef/basic.ics",
            "https://calendar.google.com/calendar/ical/***/***/basic.ics",
        ),
        (
            "https://outlook.office365.com/owa/calendar/3f2a9c1e8b7d4e6fa1b2c3d4e5f6a7b8"
            "/cal.ics",
            "https://outlook.office365.com/owa/calendar/***/cal.ics",
        ),
        ("webcal://host/holidays.ics", "webcal://host/holidays.ics"),
        ("file:///home/ann/cal.ics", "file:///home/ann/cal.ics"),
        ("/srv/feeds/cal.ics?token=s3cr3t", "/srv/feeds/cal.ics?token=***"),
        ("//user:pass@host/cal.ics", "//***@host/cal.ics"),
        ("user:pass@host/cal.ics", "***@host/cal.ics"),
        ("http://host:99999/cal.ics", "***"),
        ("http://@/cal.ics", "http://***/cal.ics"),
    ],
)
def test_redact_masks_secrets_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact(url) == shown


@given(st.text())
def test_redact_never_raises_and_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


@given(
    st.text(alphabet=st.characters(whitelist_categories=("L", "N")), min_size=6),
    st.text(alphabet=st.characters(whitelist_categories=("L", "N")), min_size=6),
)
def test_redact_never_shows_user_info_or_query_values(user: str, token: str) -> None:
    shown = redact(f"https://{user}:{token}@example.com/cal.ics?key={token}")
    assert token not in shown.replace("example.com/cal.ics?key=", "")
    assert shown.endswith("@example.com/cal.ics?key=***")


def test_redact_text_masks_every_url_in_prose_and_keeps_its_punctuation() -> None:
    from calsync.core.redact import redact_text

    text = (
        "POST https://hooks.example/x?token=s3cret: 500. Also "
        "(postgresql://app:pw@db/calsync), webcal://u:p@h/c.ics."
    )
    shown = redact_text(text)
    assert "s3cret" not in shown
    assert "pw@" not in shown
    assert "u:p@" not in shown
    assert shown == (
        "POST https://hooks.example/x?token=***: 500. Also "
        "(postgresql://***@db/calsync), webcal://***@h/c.ics."
    )
