//! The traffic probe (see submodules).
