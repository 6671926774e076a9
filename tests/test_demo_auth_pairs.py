"""launch_demo's (user, password) list API: a user listed twice, or an empty list, is refused (not a silent
last-password-wins, not a demo without login)."""

import pytest

from tests.deps import require

require("gradio")

from deploy.demo import app as demo_app  # noqa: E402
from deploy.demo.page import DemoError  # noqa: E402


def test_user_listed_twice_is_refused():
    with pytest.raises(DemoError, match="'ann' more than once") as info:
        demo_app._checker([("ann", "s3cret-A"), ("bob", "pw"), ("ann", "s3cret-B")])
    assert "s3cret" not in str(info.value)  # never echoes a password


def test_empty_list_is_refused_not_served_without_login():
    with pytest.raises(DemoError, match="empty list"):
        demo_app._checker([])


def test_distinct_users_still_checked():
    check = demo_app._checker([("ann", "one"), ("bob", "two")])
    assert check("ann", "one") and check("bob", "two") and not check("ann", "two") and not check("eve", "one")
