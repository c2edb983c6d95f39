"""modpipe: streaming moderation on Kafka with a small model first and a frontier model second.

Layers, imports pointing down only (checked by import-linter in `make lint`):
    modpipe.cli                         the roof: commands; the only code that prints,
                                        parses arguments, runs event loops, traps signals
    modpipe.quality | modpipe.stack     the quality loop; the local Kafka and Redis
    streams | escalation                tier 1 (triage) and tier 2 (frontier), independent
    classifiers                         text -> scores; tier 1's backends
    modpipe.core                        the ground: settings, errors, metrics, records, ...
"""

__version__ = "0.1.0"
