"""Shared test configuration: hypothesis profiles.

``ci`` (selected by HYPOTHESIS_PROFILE=ci, which .ci/run sets; 100 examples unless a test says otherwise) and
``dev`` (default, 40) both disable deadlines, since
shared 2-core machines make timing flaky; ``ci`` derandomises so a CI run is reproducible.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=100,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
