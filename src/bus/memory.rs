//! The single-node bus: a publish is a direct hand-off to the local hub,
//! which drops events for users without a session here, as a Redis channel
//! without subscribers would.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use super::{Bus, BusError, Delivery, Envelope};

pub struct MemoryBus {
    delivery: Arc<dyn Delivery>,
}

impl MemoryBus {
    pub fn new(delivery: Arc<dyn Delivery>) -> Self {
        Self { delivery }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, events: Vec<(Uuid, Envelope)>) -> Result<(), BusError> {
        for (user, envelope) in events {
            self.delivery.deliver(user, envelope);
        }
        Ok(())
    }

    async fn publish_confirmed(&self, events: Vec<(Uuid, Envelope)>) -> Result<(), BusError> {
        self.publish(events).await
    }

    async fn interest_changed(&self, _user: Uuid) -> Result<(), BusError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "in-process".into()
    }
}
