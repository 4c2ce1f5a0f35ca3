"""Typed settings: built-in defaults, an optional TOML file, then IKEPU_* environment variables.

Validation happens once at start; an invalid value stops the service with one line naming the
setting as the operator wrote it (IKEPU_PORT, or the key in the TOML file).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec

ENV_PREFIX = "IKEPU_"

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 8888
    data_dir: str = "./var"
    config_file: str | None = None

    mongodb_uri: str | None = None
    mongodb_db: str = "ikepu"
    mongo_driver: Literal["pymongo", "motor"] = "pymongo"
    embedded_db_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    embedded_db_test_commands: bool = False

    wechat_appid: str | None = None
    wechat_secret: str | None = None
    wechat_api_base: str = "https://api.weixin.qq.com/"
    wechat_emulator_port: Port = 8889
    wechat_timeout_s: PositiveFloat = 5.0
    wechat_threads: PositiveInt = 64

    geocoder: Literal["gazetteer", "baidu"] = "gazetteer"
    baidu_ak: str | None = None
    geocoder_timeout_s: PositiveFloat = 10.0

    # Attendance and hours (《志愿服务记录与证明出具办法》: records true, accurate, timely).
    checkin_early_min: Annotated[int, msgspec.Meta(ge=0, le=240)] = 30
    checkout_late_min: Annotated[int, msgspec.Meta(ge=0, le=720)] = 60
    checkin_code_ttl_s: PositiveInt = 12 * 3600
    hours_rounding: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    min_coverage: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.6
    star_thresholds: tuple[PositiveFloat, ...] = (100.0, 300.0, 600.0, 1000.0, 1500.0)
    certificate_issuer: str = "河南省科学技术协会"
    # The issuer's 负责人, 经办人 and 联系方式 a 志愿服务记录证明 names (民发〔2015〕149号);
    # left empty, the certificate leaves a line to sign or fill in by hand.
    certificate_person_in_charge: str = ""
    certificate_handler: str = ""
    certificate_contact: str = ""
    # Where the public reaches this service: a certificate's QR code and printed link point at
    # {public_base_url}/verify/{code}. Unset: http://{host}:{port}, right only on one machine.
    public_base_url: (
        Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")] | None
    ) = None

    # Reminders through WeChat subscribe messages (template ids from the mini-program's account).
    template_activity_reminder: str = "tmpl_activity_reminder"
    template_waitlist_promoted: str = "tmpl_waitlist_promoted"
    template_activity_changed: str = "tmpl_activity_changed"
    template_hours_pending: str = "tmpl_hours_pending"
    template_visit_scheduled: str = "tmpl_visit_scheduled"
    template_visit_declined: str = "tmpl_visit_declined"
    template_dispute_resolved: str = "tmpl_dispute_resolved"
    template_dispute_overdue: str = "tmpl_dispute_overdue"
    template_expert_visit: str = "tmpl_expert_visit"
    reminder_leads_h: tuple[PositiveFloat, ...] = (24.0, 2.0)
    hours_pending_after_h: PositiveFloat = 48.0
    dispatch_interval_s: PositiveFloat = 15.0
    dispatch_batch: PositiveInt = 500
    dispatch_concurrency: PositiveInt = 64
    reminder_max_attempts: PositiveInt = 5
    reminder_claim_s: PositiveFloat = 60.0
    scheduler_lease_s: PositiveFloat = 45.0

    # 百名首席科普专家进百县: how many county visits one expert makes a month at most.
    expert_visits_per_month: Annotated[int, msgspec.Meta(ge=1, le=31)] = 4

    # Secrets; when unset they are created once under data_dir (fine for development, set them
    # explicitly in production so every process shares them).
    secret_key: str | None = None
    data_key: str | None = None

    bootstrap_admin_openid: str | None = None
    demo: bool = False
    dev_clock: bool = False
    scheduler: bool = True
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_s: PositiveFloat = 10.0
    # Service processes (`python -m server --processes N`): with more than one, a supervisor
    # starts the embedded database and the emulator once and N service processes beside them,
    # all on `port` (SO_REUSEPORT: the kernel spreads connections) or, with "each", process i
    # on `port + i` for a proxy in front (server/supervisor.py).
    processes: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    process_ports: Literal["shared", "each"] = "shared"

    access_token_ttl_s: PositiveInt = 7200
    refresh_token_ttl_s: PositiveInt = 30 * 86400
    login_rate_per_openid: PositiveInt = 10
    login_rate_per_ip: PositiveInt = 1000
    # Addresses or networks of the reverse proxies in front of the service: only from these is
    # X-Forwarded-For believed (IKEPU_TRUSTED_PROXIES=10.0.0.5,10.1.0.0/16). None by default.
    trusted_proxies: tuple[str, ...] = ()

    @property
    def public_url(self) -> str:
        return (self.public_base_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def uses_wechat_emulator(self) -> bool:
        return not (self.wechat_appid and self.wechat_secret)


class SettingsError(Exception):
    """A setting is invalid; the message names it the way the operator wrote it."""


def _env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def load_settings(environ: dict[str, str] | None = None, **overrides) -> Settings:
    """Defaults < TOML file (IKEPU_CONFIG_FILE or ./ikepu.toml) < environment < overrides."""
    environ = dict(os.environ if environ is None else environ)
    fields = set(Settings.__struct_fields__)
    raw: dict[str, object] = {}
    origin: dict[str, str] = {}

    config_file = environ.get(_env_name("config_file")) or overrides.get("config_file")
    path = Path(config_file) if config_file else Path("ikepu.toml")
    if config_file or path.exists():
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{_env_name('config_file')}: cannot read {path}: {exc}") from exc
        for key, value in table.items():
            if key not in fields:
                raise SettingsError(f"{path}: unknown setting {key!r}")
            raw[key] = value
            origin[key] = f"{path}: {key}"

    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key in fields:
            raw[key] = _from_env(value, listed=key in _LISTED)
            origin[key] = name

    for key, value in overrides.items():
        raw[key] = value
        origin[key] = key

    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(exc, raw, origin)) from None
    for proxy in settings.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            name = origin.get("trusted_proxies", _env_name("trusted_proxies"))
            raise SettingsError(
                f"invalid setting {name}: {proxy!r} is no address or network"
            ) from None
    if settings.processes > 1 and settings.dev_clock:
        # Each process keeps its own clock: one moved by a call would disagree with the rest.
        raise SettingsError(
            f"{_env_name('dev_clock')}=1 needs {_env_name('processes')}=1 "
            "(each process has its own development clock)"
        )
    if settings.process_ports == "each" and settings.port + settings.processes - 1 > 65535:
        raise SettingsError(
            f"{_env_name('port')}={settings.port} leaves no room for {settings.processes} "
            f"consecutive ports ({_env_name('process_ports')}=each)"
        )
    if settings.geocoder == "baidu" and not settings.baidu_ak:
        raise SettingsError(f"{_env_name('baidu_ak')} is required when IKEPU_GEOCODER=baidu")
    return settings


_LISTED = {
    f.name for f in msgspec.structs.fields(Settings) if getattr(f.type, "__origin__", None) is tuple
}
"""Settings that are lists: comma-separated in the environment."""


def _from_env(value: str, *, listed: bool) -> object:
    if listed:
        return [item.strip() for item in value.split(",") if item.strip()]
    # An empty variable means "unset", so IKEPU_MONGODB_URI= falls back to the embedded server.
    return None if value == "" else value


def _explain(exc: msgspec.ValidationError, raw: dict, origin: dict[str, str]) -> str:
    text = str(exc)
    marker = " - at `$."
    if marker in text:
        reason, _, where = text.partition(marker)
        key = where.rstrip("`").split("[")[0].split(".")[0]
        name = origin.get(key, _env_name(key))
        return f"invalid setting {name}={raw.get(key)!r}: {reason}"
    return f"invalid settings: {text}"
