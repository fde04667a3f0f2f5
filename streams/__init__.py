"""The Faust app: watch events from Kafka through the processing core into Feast.

``plugin.streaming.worker`` holds the framework-free batch logic (validate, process, build the
output messages) and ``plugin.streaming.deadline`` the bound on how long a batch waits for its
replans; ``plugin.wiring.build_worker`` assembles them. Here: ``streams.app``, the Faust app and
its agent, ``streams.runner``, which runs it, and ``streams.logs``, structured logging. Run it
with ``explore worker`` (``docs/STREAMING.md``).
"""
