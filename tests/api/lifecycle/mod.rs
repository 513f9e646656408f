//! A message after it is sent: edited, deleted for everyone, reacted to,
//! replied to. Storage rules on both stores (`store`), the wire and REST
//! with every refusal (`wire`), and an offline device converging through
//! `sync` (`sync`).

mod store;
mod sync;
mod wire;
