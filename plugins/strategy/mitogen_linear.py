"""Mitogen's linear strategy, found through strategy_plugins wherever pip put the
mitogen package: one persistent Python per host and user instead of a new
interpreter (and a new compile of the module code) for every task. Under
software emulation that start-up is most of what an unchanged task costs."""

from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule

__all__ = ["StrategyModule"]
