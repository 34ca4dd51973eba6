//! Load benchmark (placeholder; see docs/performance.md).
fn main() {}
