//! Delivery benchmark (issue 13): written by a helper.

fn main() {}
