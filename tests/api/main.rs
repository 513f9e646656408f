//! Integration tests: real servers on random ports, against real Postgres
//! (127.0.0.1:5432 unless `TEST_DATABASE_URL` says otherwise) and SQLite.

mod auth;
mod bench_smoke;
mod cli;
mod cluster;
mod deploy;
mod groups;
mod helpers;
mod hostile;
mod openapi;
mod ops;
mod proxy;
mod realtime;
mod redis_cluster;
mod rest;
mod store_contract;
mod web;
mod ws;
mod wsclient;
