//! `vessel disk …`: create, inspect, convert, resize and check disk images.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum DiskCommand {}

pub fn run(cmd: DiskCommand) -> anyhow::Result<i32> {
    match cmd {}
}
