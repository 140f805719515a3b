"""Configuration: TOML files and board definitions -> typed, validated, frozen config.

- ``schema``: the config dataclasses and ``load_config`` / ``config_from_dict``.
- ``boards``: board definitions (``boards/*.toml``, user directories).
- ``_check``: the one validation toolkit every layer uses (config, boards,
  codecs, sinks, plugins), so every mistake reads the same: one line naming
  the file, the key and what is expected.
"""

from firmware_host.config.schema import DEFAULT_CODECS as DEFAULT_CODECS
from firmware_host.config.schema import DEFAULT_SINKS as DEFAULT_SINKS
from firmware_host.config.schema import MAX_CONFIG_BYTES as MAX_CONFIG_BYTES
from firmware_host.config.schema import BufferConfig as BufferConfig
from firmware_host.config.schema import Config as Config
from firmware_host.config.schema import ControlConfig as ControlConfig
from firmware_host.config.schema import DeviceConfig as DeviceConfig
from firmware_host.config.schema import LogConfig as LogConfig
from firmware_host.config.schema import SerialConfig as SerialConfig
from firmware_host.config.schema import ShutdownConfig as ShutdownConfig
from firmware_host.config.schema import SinkConfig as SinkConfig
from firmware_host.config.schema import config_from_dict as config_from_dict
from firmware_host.config.schema import default_control_socket as default_control_socket
from firmware_host.config.schema import load_config as load_config
from firmware_host.errors import ConfigError as ConfigError
