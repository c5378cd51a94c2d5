//! Use cases that combine the domain with the ports; shared by every function and worker so
//! each rule is written once.

pub mod outbox;
