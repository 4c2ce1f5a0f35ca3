"""Who is calling: forwarded headers (the client's address, the scheme a proxy ended TLS for)
are believed only from a configured proxy, and a blank login code is bad input, not a WeChat
error."""

from __future__ import annotations

import pytest

from config import SettingsError, load_settings
from console.handlers.login import LOGIN_COOKIE


async def _login(http, emulator, openid: str, **headers: str):
    code = await emulator.jscode(openid)
    return await http.post("/mp/v1/auth/login", json={"code": code}, headers=headers)


@pytest.mark.parametrize("settings_overrides", [{"login_rate_per_ip": 2}])
async def test_a_forged_forwarded_for_does_not_escape_the_rate_limit(http, emulator):
    statuses = [
        (
            await _login(http, emulator, f"o_spoof{i}", **{"X-Forwarded-For": f"10.9.0.{i}"})
        ).status_code
        for i in range(4)
    ]
    assert statuses == [200, 200, 429, 429]


@pytest.mark.parametrize(
    "settings_overrides", [{"login_rate_per_ip": 2, "trusted_proxies": ("127.0.0.0/8",)}]
)
async def test_behind_a_trusted_proxy_each_client_has_its_own_limit(http, emulator):
    def via(client: str) -> dict[str, str]:
        # What the client sent itself comes first; the proxy appends the address it saw.
        return {"X-Forwarded-For": f"203.0.113.99, {client}"}

    first = [(await _login(http, emulator, f"o_a{i}", **via("198.51.100.1"))).status_code
             for i in range(3)]  # fmt: skip
    other = (await _login(http, emulator, "o_b", **via("198.51.100.2"))).status_code
    assert (first, other) == ([200, 200, 429], 200)


def _cookie_is_secure(response) -> bool:
    """Whether the sign-in attempt's cookie (the page sets it and the XSRF token's) is Secure."""
    (cookie,) = [c for c in response.headers.get_list("set-cookie") if c.startswith(LOGIN_COOKIE)]
    return "secure" in {part.strip().lower() for part in cookie.split(";")[1:]}


@pytest.mark.parametrize("settings_overrides", [{"trusted_proxies": ("127.0.0.0/8",)}])
async def test_behind_a_proxy_that_ends_tls_the_console_cookie_is_secure(http):
    tls = await http.get("/console/login", headers={"X-Forwarded-Proto": "https"})
    plain = await http.get("/console/login", headers={"X-Forwarded-Proto": "http"})
    assert (_cookie_is_secure(tls), _cookie_is_secure(plain)) == (True, False)


async def test_a_scheme_forwarded_by_an_untrusted_caller_is_not_believed(http):
    forged = await http.get("/console/login", headers={"X-Forwarded-Proto": "https"})
    assert forged.status_code == 200
    assert not _cookie_is_secure(forged)


def test_trusted_proxies_come_from_the_environment_and_are_checked():
    env = {"IKEPU_TRUSTED_PROXIES": "10.0.0.5, 10.1.0.0/16"}
    assert load_settings(env).trusted_proxies == ("10.0.0.5", "10.1.0.0/16")
    with pytest.raises(SettingsError, match="IKEPU_TRUSTED_PROXIES"):
        load_settings({"IKEPU_TRUSTED_PROXIES": "10.0.0.5,proxy.example"})


@pytest.mark.parametrize("code", [" ", "\t\n", "  abc", "a b"])
async def test_a_blank_login_code_is_bad_input(http, emulator, code):
    emulator.state.reset()
    answer = await http.post("/mp/v1/auth/login", json={"code": code})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_request"
    assert answer.json()["error"]["field"] == "code"
    assert emulator.state.calls["jscode2session"] == 0, "WeChat was never asked"
