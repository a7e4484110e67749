//! All integration tests, in one test target so the binary is built once.
//! Each module runs the real `stackctl` binary against temp dirs.

mod common_persist;
mod fake_http;
mod harness;

mod admin_ui;
mod astrbot;
mod bodies;
mod client_timeouts;
mod debounce;
mod deployment;
mod differential;
mod fanout;
mod front;
mod gateway;
mod h2c;
mod hanging_remote;
mod hf_lfs;
mod large_files;
mod lifecycle;
mod manifest;
mod persist;
mod point_in_time;
mod pool;
mod progress;
mod recovery;
mod recovery_cli;
mod resources;
mod supervisor;
mod tls;
mod tunnels;
mod writers;
