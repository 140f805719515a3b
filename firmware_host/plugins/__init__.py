"""Plugins: discovery, the context a plugin registers with, the host that
supervises them, and the scheduler of their periodic tasks."""

from firmware_host.errors import PluginOptionError as PluginOptionError
from firmware_host.plugins.context import FrameProcessor as FrameProcessor
from firmware_host.plugins.context import PluginContext as PluginContext
from firmware_host.plugins.host import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from firmware_host.plugins.host import PluginHost as PluginHost
from firmware_host.plugins.host import PluginInfo as PluginInfo
from firmware_host.plugins.host import discover_plugins as discover_plugins
from firmware_host.plugins.host import plugins_report as plugins_report
from firmware_host.plugins.host import read_plugin_table as read_plugin_table
from firmware_host.plugins.host import start_plugins as start_plugins
from firmware_host.plugins.scheduler import PeriodicTask as PeriodicTask
