"""MMKD: multi-level distillation of an English teacher's semantic knowledge into a multilingual student."""

__version__ = "0.1.0"
