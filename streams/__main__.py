"""``python -m streams``: the worker with settings from the environment (``EXPLORE_*``)."""

from plugin.settings import load_settings
from streams.runner import run_worker

if __name__ == "__main__":
    run_worker(load_settings())
