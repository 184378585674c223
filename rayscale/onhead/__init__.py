"""Scripts the launcher runs on a cluster's head as jobs (Ray and the standard library only)."""
