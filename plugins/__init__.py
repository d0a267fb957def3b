"""First-party feature plugins, each registered through the `brokerkernel.plugins` entry points."""
