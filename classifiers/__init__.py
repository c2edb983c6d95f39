"""Tier-1 classifiers: a batch of texts -> calibrated probabilities per policy category.

One interface (`Classifier`, base.py), several backends chosen in settings through
registry.py. Nothing here knows about Kafka; `streams` calls in, never the other way.
"""

from classifiers.base import Classification, Classifier
from classifiers.registry import build_classifier

__all__ = ["Classification", "Classifier", "build_classifier"]
