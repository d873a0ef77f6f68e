//! Nothing to use: `crow` is the binary of this package (`src/main.rs`).
//!
//! This library target exists so another package can depend on `crow-cli`
//! with a feature, cleanly: Cargo warns, on every command, about a
//! dependency on a package with no library. The workspace's test package
//! depends on it with `bench` (a dev-dependency), and resolver 2 then builds
//! the one `crow` of `cargo build --workspace --all-targets` (and `cargo
//! test`) with `crow bench`. A plain `cargo build -p crow-cli` (the product
//! binary) still has no benchmark code.
