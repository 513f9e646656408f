//! Times every store call for the `ochat_db_operation_seconds` histogram and
//! counts failures, whichever backend is underneath.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;

pub struct Instrumented(pub Arc<dyn Store>);

async fn timed<T>(op: &'static str, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    let started = Instant::now();
    let result = call.await;
    // Not-found and conflicts are answers, not database failures.
    let failed = matches!(
        result,
        Err(StoreError::Unavailable(_) | StoreError::Internal(_))
    );
    crate::metrics::db_operation(op, started.elapsed(), !failed);
    result
}

/// Times each call, by the method's name.
macro_rules! timed_store {
    ($wrapper:ty; $(fn $name:ident($($arg:ident: $ty:ty),*) -> $answer:ty;)*) => {
        #[async_trait]
        impl Store for $wrapper {
            $(async fn $name(&self, $($arg: $ty),*) -> StoreResult<$answer> {
                timed(stringify!($name), self.0.$name($($arg),*)).await
            })*
        }
    };
}

with_store_methods!(timed_store!(Instrumented));
