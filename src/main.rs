//! The `trajdb` command-line tool.

fn main() {}
