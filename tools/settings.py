"""Settings read from the environment, passed explicitly to everything that needs them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

from tools.errors import ConfigError

DEFAULT_HOME = Path("~/.labelpilot")
DEFAULT_LABEL_MODEL = "gpt-4o-mini"


class Settings(BaseModel):
    """Everything labelpilot is configured with; built once at an entry point and passed down."""

    model_config = ConfigDict(frozen=True)

    home: Path
    database_url: str | None = None
    chroma_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    label_model: str = DEFAULT_LABEL_MODEL
    agent_model: str | None = None
    #: Model that writes candidate instructions (improve, prompt prefer); default: the labeling model.
    writer_model: str | None = None
    #: Web app logins given in the environment, `name:password,name:password` (LABELPILOT_USERS).
    web_users: SecretStr | None = None
    #: The file of web app logins (LABELPILOT_USERS_FILE); default: `users.toml` in the data folder.
    users_file: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (see the README's configuration table)."""
        env = os.environ if env is None else env
        home = Path(env.get("LABELPILOT_HOME") or DEFAULT_HOME).expanduser()
        key = env.get("OPENAI_API_KEY") or None
        web_users = env.get("LABELPILOT_USERS") or None
        users_file = env.get("LABELPILOT_USERS_FILE") or None
        return cls(
            home=home,
            database_url=env.get("LABELPILOT_DATABASE_URL") or None,
            chroma_url=env.get("LABELPILOT_CHROMA_URL") or None,
            openai_api_key=SecretStr(key) if key else None,
            openai_base_url=env.get("OPENAI_BASE_URL") or None,
            label_model=env.get("LABELPILOT_MODEL") or DEFAULT_LABEL_MODEL,
            agent_model=env.get("LABELPILOT_AGENT_MODEL") or None,
            writer_model=env.get("LABELPILOT_WRITER_MODEL") or None,
            web_users=SecretStr(web_users) if web_users else None,
            users_file=Path(users_file).expanduser() if users_file else None,
        )

    @property
    def effective_database_url(self) -> str:
        """Return the configured database URL, or the SQLite file inside the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'labelpilot.db'}"

    @property
    def uses_sqlite(self) -> bool:
        """Whether the database is an embedded SQLite file."""
        return self.effective_database_url.startswith("sqlite")

    def ensure_home(self) -> Path:
        """Create the data folder if needed and return it."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the data folder {self.home}: {exc.strerror}",
                hint="set LABELPILOT_HOME to a writable folder",
            ) from exc
        return self.home

    @property
    def chroma_path(self) -> Path:
        """Folder of the embedded Chroma example store (used when LABELPILOT_CHROMA_URL is not set)."""
        return self.home / "chroma"

    @property
    def exports_dir(self) -> Path:
        """Folder where exports are written when no output path is given."""
        return self.home / "exports"
