"""The smallest Tune search worth measuring: trials that sleep instead of training.

Each trial draws its length from a seeded log-normal spread around --mean-s, then sleeps it
in --rounds equal rounds, reporting after each round as a training loop reports its metric.
It uses almost no CPU, so on a few cores it shows what is left when the trials are not the
bottleneck: starting trial processes, the Tune driver, the cluster's orchestration. It is
also a plain Tune script, the kind `rayscale job submit / scaling --working-dir` measure:

    rayscale scaling --working-dir examples --workers 1,2,4 -- \\
        python sleep_search.py --num-samples 32 --mean-s 2
"""

from __future__ import annotations

import argparse
import math
import random
import time

from ray import tune


def trainable(config: dict) -> None:
    per_round = config["length_s"] / config["rounds"]
    for i in range(1, config["rounds"] + 1):
        time.sleep(per_round)
        # A metric that improves with rounds, so schedulers and best-trial picks work.
        tune.report({"loss": config["length_s"] / i, "round": i})


def lengths(n: int, mean_s: float, spread: float, seed: int) -> list[float]:
    """n trial lengths, log-normal around mean_s (their mean is mean_s)."""
    rng = random.Random(seed)
    mu = math.log(mean_s) - spread**2 / 2
    return [round(rng.lognormvariate(mu, spread), 3) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-samples", type=int, default=16)
    ap.add_argument("--mean-s", type=float, default=2.0, help="mean trial length in seconds")
    ap.add_argument("--spread", type=float, default=0.5, help="log-normal sigma of the lengths")
    ap.add_argument("--rounds", type=int, default=4, help="reports per trial")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--verbose", type=int, default=0, choices=(0, 1, 2), help="Tune's console output"
    )
    a = ap.parse_args()
    space = {
        "length_s": tune.grid_search(lengths(a.num_samples, a.mean_s, a.spread, a.seed)),
        "rounds": a.rounds,
    }
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(metric="loss", mode="min", reuse_actors=True),
        run_config=tune.RunConfig(name=f"sleep-search-{int(time.time())}", verbose=a.verbose),
    )
    best = tuner.fit().get_best_result()
    print(f"{a.num_samples} trials; best loss {best.metrics['loss']:.3f}")


if __name__ == "__main__":
    main()
