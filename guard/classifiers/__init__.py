"""Classifiers behind one small interface (guard.classifiers.base.Classifier), one per file."""
