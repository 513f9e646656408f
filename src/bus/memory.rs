//! The single-node bus: a publish is a direct hand-off to the local registry.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use uuid::Uuid;

use super::{Bus, BusError, Delivery, Envelope};

pub struct MemoryBus {
    delivery: Arc<dyn Delivery>,
    /// Users with a session here; events for anyone else are dropped, as a
    /// Redis channel without subscribers would drop them.
    subscribed: Mutex<HashSet<Uuid>>,
}

impl MemoryBus {
    pub fn new(delivery: Arc<dyn Delivery>) -> Self {
        Self {
            delivery,
            subscribed: Mutex::new(HashSet::new()),
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, events: Vec<(Uuid, Envelope)>) -> Result<(), BusError> {
        for (user, envelope) in events {
            let listening = self.subscribed.lock().expect("not poisoned").contains(&user);
            if listening {
                self.delivery.deliver(user, envelope);
            }
        }
        Ok(())
    }

    async fn subscribe(&self, user: Uuid) -> Result<(), BusError> {
        self.subscribed.lock().expect("not poisoned").insert(user);
        Ok(())
    }

    async fn unsubscribe(&self, user: Uuid) -> Result<(), BusError> {
        self.subscribed.lock().expect("not poisoned").remove(&user);
        Ok(())
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "in-process".into()
    }
}
