//! The AFL targets' checks: the very module the property tests use, so both drivers test the same
//! invariants.

#[path = "../../tests/parser_oracle/mod.rs"]
pub mod oracle;
