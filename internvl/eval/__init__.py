"""Evaluation (layer 4): metrics and evaluation loops shared by the apps. May import every layer below it."""
