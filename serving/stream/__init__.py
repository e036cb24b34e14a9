"""Streaming: the champion scores records read from a Redis stream (``flywheel stream serve``).

``records`` turns one read of stream entries into predictions and dead letters (pure, no Redis);
``consumer`` is the IO loop: the consumer group, claiming a dead consumer's records, writing and
acknowledging in one transaction, profiling and hot swap as the REST service does them.
"""
