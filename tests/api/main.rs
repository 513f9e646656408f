//! The product's spec: real servers on random ports, against real Postgres
//! (127.0.0.1:5432 unless `TEST_DATABASE_URL` says otherwise) and SQLite.

mod auth;
mod cluster;
mod groups;
mod helpers;
mod hostile;
mod lifecycle;
mod migration;
mod openapi;
mod ops;
mod people_search;
mod realtime;
mod redis_cluster;
mod replica;
mod rest;
mod retention;
mod store_batches;
mod store_contract;
mod web;
mod ws;
