"""Built-in reward methods. Each registers through the `harness.reward_methods` entry point, like any plug-in."""
