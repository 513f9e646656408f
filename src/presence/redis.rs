//! Redis presence (multi-node).
