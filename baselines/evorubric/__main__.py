"""`python -m baselines.evorubric --preset cpu --workdir runs/evorubric-cpu [--set key=value ...]`."""

from baselines.coevolution.run import main

if __name__ == "__main__":
    main("evorubric")
