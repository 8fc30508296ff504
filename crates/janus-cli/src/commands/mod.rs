//! One module per subcommand; none imports another (shared pieces live in
//! `args`, `backend`, `output` and `progress`).

pub mod bench;
pub mod convert;
pub mod generate;
pub mod serve;
pub mod understand;
pub mod vq;
