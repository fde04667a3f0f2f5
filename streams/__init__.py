"""The Faust app: watch events from Kafka through the processing core into Feast.

``streams.worker`` holds the framework-free batch logic (validate, process, build the output
messages), ``streams.app`` the Faust app and its agent, ``streams.deadline`` the bound on how
long a batch waits for its replans, ``streams.logs`` structured logging. Run it with
``explore worker`` (``docs/STREAMING.md``).
"""
