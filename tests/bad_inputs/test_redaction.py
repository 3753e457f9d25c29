"""Passwords in storage URLs never reach a message: the redaction rule on awkward URLs."""

import pytest

from automlp.storage import redact


@pytest.mark.parametrize("url, shown", [
    ("postgresql://automlp:s3cret@db:5432/x", "postgresql://automlp:***@db:5432/x"),
    ("postgresql://automlp:p@ss@w0rd@db/x", "postgresql://automlp:***@db/x"),  # '@' inside the password
    ("mysql+pymysql://root:pw@localhost/x?charset=utf8mb4", "mysql+pymysql://root:***@localhost/x?charset=utf8mb4"),
    ("postgresql://db/x?user=u&password=s3cret&sslmode=require", "postgresql://db/x?user=u&password=***&sslmode=require"),
    ("postgresql://postgres@127.0.0.1:1/test", "postgresql://postgres@127.0.0.1:1/test"),  # no password to hide
    ("sqlite:///studies/x.db", "sqlite:///studies/x.db"),
    ("cannot open postgresql://a:b@h/d: refused", "cannot open postgresql://a:***@h/d: refused"),
])
def test_redact(url, shown):
    assert redact(url) == shown
