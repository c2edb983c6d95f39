"""The shipped settings: `default.yaml` (every key commented) and `policy.yaml` (the taxonomy).

Package data, read with importlib.resources, so an installed modpipe starts from any
directory; `--config FILE` or `MODPIPE_CONFIG` names another settings file.
"""
