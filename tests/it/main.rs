//! Integration tests (one test binary, `cargo test --test it`).

mod prom;
