"""Running the theory as experiments: TOML config, sweeps over executors, run folders, fits, figures, the
``ntkframe`` command line (the top layer below the public ``nf.*`` API)."""
