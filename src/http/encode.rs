//! (being written: see src/http/mod.rs for what this module owns)
