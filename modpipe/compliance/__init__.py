"""EU DSA compliance: statements of reasons, their submission, notices, appeals, reports.

Built on the ground (modpipe.core) alone; the review console imports the appeal records
from here, and the commands (`modpipe statements`, `modpipe notices`, `modpipe
transparency`) run these pieces.
"""
