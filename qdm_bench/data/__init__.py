"""Evaluation images: built-in sets, user files and folders, medical windowing, phantoms and the SR degradation."""
