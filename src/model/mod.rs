//! The domain model: invocations, their events and status machine, async invoke configs, and
//! the validation of every input rule. Pure data and functions: no I/O, no async, no tonic.

pub mod config;
pub mod id;
pub mod invocation;
pub mod status;
pub mod validate;

pub use config::{AsyncInvokeConfig, DestinationArn, StoredConfig};
pub use invocation::{
    Change, DestinationStatus, Event, FunctionKey, Invocation, InvocationKey, DEFAULT_QUALIFIER,
};
pub use status::{transition, Status, TransitionError, Trigger};
pub use validate::ValidationError;
