"""Where ``adapt`` meets the domain plugins (``domains.base``): their task scorers, listed and registered.

    from adapt.domains_bridge import register_domain_metrics
    register_domain_metrics()      # every plugin's ``metrics[task]`` -> adapt.metrics.register_task

A domain's scorer replaces a *built-in* scorer of the same task (``classification``, ``grounding``, …)
and adds tasks adapt does not know (``rsvqa``). It never replaces a scorer registered by the user
with ``adapt.metrics.register_task``, and when two domains define the same task the first domain in
name order wins (with a warning). A scorer's main metric is its ``main_metric`` attribute when it has
one, else the first key it returns. Calling again is cheap and idempotent; domains registered after
the first call are picked up.
"""

from __future__ import annotations

import warnings

from . import metrics as _metrics

__all__ = ["domain_task_owners", "register_domain_metrics"]

# task -> (domain name, scorer) that this module registered
_REGISTERED: dict[str, tuple[str, object]] = {}


def register_domain_metrics() -> dict[str, str]:
    """Register every domain plugin's task scorers with `adapt.metrics.register_task`.

    Returns ``{task: domain}`` for the tasks now scored by a domain. Plugins that fail to load are
    reported by ``domains.base`` (warning + ``discovery_errors``) and skipped.
    """
    from domains.base import get_domain, list_domains

    for name in list_domains():
        plugin = get_domain(name)
        for task, fn in plugin.metrics.items():
            current = _metrics._TASKS.get(task)
            mine = _REGISTERED.get(task)
            if mine is not None and mine[0] != name and current is mine[1]:
                if mine[1] is not fn:
                    warnings.warn(f"pocket-adapt: task {task!r} is scored by domain {mine[0]!r}; "
                                  f"domain {name!r}'s scorer for it is ignored", RuntimeWarning, stacklevel=2)
                continue
            builtin = _metrics._BUILTIN.get(task)
            ours = mine is not None and current is mine[1]
            if current is not None and current is not fn and not ours and not (builtin and current is builtin[0]):
                continue  # the user's own register_task wins
            _metrics.register_task(task, fn, overwrite=True, main_metric=getattr(fn, "main_metric", None))
            _REGISTERED[task] = (name, fn)
    return domain_task_owners()


def domain_task_owners() -> dict[str, str]:
    """``{task: domain}`` for the tasks `register_domain_metrics` registered and that are still in place."""
    return {task: dom for task, (dom, fn) in _REGISTERED.items() if _metrics._TASKS.get(task) is fn}
