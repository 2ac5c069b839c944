//! tbc compiler.
