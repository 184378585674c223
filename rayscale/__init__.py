"""rayscale: a deployment kit for Ray clusters and their scaling curve."""

import os

__version__ = "0.1.0"

# Ray reads RAY_AUTH_MODE once per process, at its first use, and every rayscale cluster
# runs with token auth. Set it before anything imports Ray, or a later GCS poll in this
# process would go out without the token. An explicit user setting is left alone.
os.environ.setdefault("RAY_AUTH_MODE", "token")
