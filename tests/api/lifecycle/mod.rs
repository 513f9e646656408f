//! A message after it is sent: edited, deleted for everyone, reacted to,
//! replied to, carrying files. Storage rules on both stores (`store`) and in batches (`batches`), the wire and REST
//! with every refusal (`wire`), and an offline device converging through
//! `sync` (`sync`), attachments in the embedded store (`attachments`) and in
//! an S3-compatible server the test starts (`s3`).

mod attachments;
mod batches;
mod faults;
mod s3;
mod store;
mod sync;
mod wire;
