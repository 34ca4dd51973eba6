//! Query benchmark (being written).
fn main() {}
