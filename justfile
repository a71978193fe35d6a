# The same commands as the README.

# Run Quicksilver on its built-in defaults (creates quicksilver.toml and var/ here).
run:
    cargo run --release --bin qsctl -- up

# Run every test.
test:
    cargo test --workspace

# What CI runs: formatting, lints, tests.
ci:
    bash .ci/run
