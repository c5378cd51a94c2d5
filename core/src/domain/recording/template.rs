//! Recording templates (SCHEMAS.md §3.1), push domains and record rules (§3.2): the `/v1`
//! control plane of recording. (Being written.)
