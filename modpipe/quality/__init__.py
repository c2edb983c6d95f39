"""The quality loop in one home: labelled data (datasets), the CPU model (training), band
choice and quality reports (bands). Sits above the tiers: it scores with `classifiers` and
routes with `streams.routing`; it never prints (the `modpipe` commands do).
"""
