//! Redis pub/sub bus (multi-node).
