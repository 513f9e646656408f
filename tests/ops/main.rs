//! Operations checks, apart from the product's behaviour (`tests/api`):
//! the shipped deploy files run for real (nginx, Prometheus, compose and
//! Kubernetes manifests), the `ochat` command line, and a smoke run of the
//! load tool.

// Shared with the `api` test binary, which uses more of them.
#[allow(dead_code, unused_imports)]
#[path = "../api/helpers/mod.rs"]
mod helpers;

mod bench_smoke;
mod cli;
mod deploy;
mod docs;
