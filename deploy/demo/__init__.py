"""A Gradio demo for adapted models, with a panel per domain (``adapt demo``); see :mod:`deploy.demo.app`.

Gradio and the model code are imported on first use, so ``deploy.demo.cli`` stays cheap to import.
"""

from __future__ import annotations

import os

# before any submodule imports gradio: no usage analytics or version pings, no hub telemetry
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__all__ = ["ModelSession", "build_demo", "launch_demo"]


def __getattr__(name: str):
    if name in ("build_demo", "launch_demo"):
        from deploy.demo import app

        return getattr(app, name)
    if name == "ModelSession":
        from deploy.demo.session import ModelSession

        return ModelSession
    raise AttributeError(f"module 'deploy.demo' has no attribute {name!r}")
