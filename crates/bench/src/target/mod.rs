//! The servers under test and how participants signal to them.

pub mod sfumato;
