"""The scaling study's parts: its plan and progress, one point, the baselines, the summary
(rayscale.scaling runs them in order)."""
