"""`python -m baselines.evolm --preset cpu --workdir runs/evolm-cpu [--set key=value ...]`."""

from baselines.coevolution.run import main

if __name__ == "__main__":
    main("evolm")
