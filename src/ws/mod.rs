//! WebSocket: upgrade, per-connection session, and the node-local hub.

pub mod hub;

pub use hub::Hub;
