"""The config file: its model, its errors, and every way chain429 reads, edits and shows it.

Owns: the frozen pydantic model of 429chain's schema and ours (`model`),
with the checks that span its sections (`cross_checks`), loading with
`${VAR}` references and errors with file, line and field (`loader`,
`errors`), the file's JSON Schema for editors (`schema`), the round-trip
writer the CLI and the admin API edit through (`writer`, `yaml_lines`,
`files`), the semantic diff (`diff`), and how secrets are shown (`masking`).

May import: `chain429.upstream` (presets and address rules a config is
checked against). Nothing here knows about requests, the server or the log.
"""

from chain429.config.errors import ConfigError, ConfigIssue
from chain429.config.loader import find_config_path, load_config, parse_config_text, read_dotenv
from chain429.config.model import Chain, ChainEntry, Config, Provider, RateLimits, Settings

__all__ = [
    "Chain",
    "ChainEntry",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Provider",
    "RateLimits",
    "Settings",
    "find_config_path",
    "load_config",
    "parse_config_text",
    "read_dotenv",
]
