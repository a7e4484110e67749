//! The subcommands' glue (moving here from `recovery_client` and
//! `persist::commands`; split by command next).

pub mod progress;
pub mod restore;
