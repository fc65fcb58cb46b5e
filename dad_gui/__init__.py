"""DiffusionAD Inspector: the desktop application over ``core``."""

__version__ = "0.1.0"
APP_NAME = "DiffusionAD Inspector"
