//! Settings shared by every host.
