"""A plugin manager for listing plugins without opening a database (``allotment plugins``).

Built-in defaults are registered unbound, beside every installed entry point.
"""

from __future__ import annotations

import pluggy

from allotment.plugins import create_plugin_manager


def listing_plugin_manager() -> pluggy.PluginManager:
    from allotment.defaults import default_plugins

    return create_plugin_manager(default_plugins(None))  # type: ignore[arg-type]
