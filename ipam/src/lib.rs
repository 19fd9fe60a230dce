//! Placeholder: this crate is built by a later issue (see the issue tracker); it compiles so that the workspace layout tells the architecture.
